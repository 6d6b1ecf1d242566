"""`openrouter-proxy` / `python -m app`: serve, check, models.

Every failure ends as one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from app import __version__
from app.config import Settings, load_settings
from app.errors import ConfigError, DatabaseError, ProxyError, UpstreamRejected
from app.team.commands import add_commands
from app.team.database import keys_exist
from app.upstream.client import OpenRouterClient

# Seconds open requests may run on after SIGTERM; streams still open then end cleanly.
GRACE_SECONDS = 10


class CommandError(Exception):
    """A command cannot do its job; the message is the line printed on stderr."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """DESIGN §7: open mode (no client keys yet) only on loopback unless explicitly allowed."""
    if is_loopback(settings.host) or settings.allow_open:
        return
    raise CommandError(
        f"refusing to serve on {settings.host}: no client keys exist, so anyone who can reach "
        "this port could spend your OpenRouter key. Bind 127.0.0.1 (PROXY_HOST), or set "
        "PROXY_ALLOW_OPEN=true if the port is protected another way."
    )


def raise_open_files_limit() -> None:
    """Each stream holds two sockets: the common soft limit of 1,024 open files would
    refuse the 1,000 streams DESIGN §9 promises. Raise it to the hard limit (DESIGN §6)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):  # e.g. a sandbox that forbids it
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(args: argparse.Namespace) -> None:
    from app.main import create_app
    from app.request_log import configure_logging
    from app.server.http_limits import BoundedHttpToolsProtocol
    from app.server.shutdown import run_server

    settings = load_settings(args.config, host=args.host, port=args.port)
    if not asyncio.run(keys_exist(settings)):
        check_bind(settings)
    configure_logging(settings.log_level, settings.log_format, server=True)
    raise_open_files_limit()
    # uvicorn re-raises SIGTERM after its graceful shutdown; a clean stop should exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = create_app(settings)
    run_server(
        app,
        app.state.services.streams,
        grace=GRACE_SECONDS,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,  # uvicorn's lines go through the proxy's handler (request_log.py)
        # request-head size and time bounds; client connections count in the open files
        http=BoundedHttpToolsProtocol.counting(app.state.services.descriptors),
        server_header=False,
        # No route takes a WebSocket: uvicorn's default ("auto") imports a WebSocket
        # library at start-up, ~1 MiB of a serving process; the protocol above refuses
        # an upgrade with 403 itself.
        ws="none",
    )


async def _check(settings: Settings) -> list[str]:
    if settings.upstream_key is None:
        raise CommandError("OPENROUTER_API_KEY is not set: chat will answer 503 until it is")
    client = OpenRouterClient(settings)
    try:
        catalogue = await client.get_json("/models", auth=False)
        models = catalogue.get("data") or []
        lines = [f"upstream: {settings.openrouter_base_url} answers, {len(models)} models"]
        try:
            key = (await client.get_json("/key", auth=True)).get("data") or {}
        except UpstreamRejected as error:
            raise CommandError(
                f"OpenRouter rejected OPENROUTER_API_KEY ({error.status}: {error.message})"
            ) from None
        lines.append(f"key: {key.get('label', '?')} accepted")
        lines.append(f"credit limit: {key.get('limit')} (remaining {key.get('limit_remaining')})")
        daily = key.get("free_model_daily_requests")
        if isinstance(daily, dict):
            lines.append(
                f"free-model requests today: {daily.get('used')} used of {daily.get('limit')}"
            )
        return lines
    finally:
        await client.aclose()


def check(args: argparse.Namespace) -> None:
    settings = load_settings(args.config)
    for line in asyncio.run(_check(settings)):
        print(line)  # noqa: T201
    print("ok")  # noqa: T201


def _model_rows(settings: Settings) -> list[dict[str, Any]]:
    """Ask the running proxy (it knows cooldowns); else the upstream catalogue."""
    import httpx  # only this command needs a synchronous client

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        # In key mode the server answers /v1/models to a client key or the admin key.
        admin = settings.admin_key
        headers = {"Authorization": f"Bearer {admin.get_secret_value()}"} if admin else {}
        url = f"http://{host}:{settings.port}/v1/models"
        response = httpx.get(url, headers=headers, timeout=3)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["data"]
        return rows
    except (httpx.HTTPError, KeyError, ValueError):
        pass

    async def upstream() -> list[dict[str, Any]]:
        client = OpenRouterClient(settings)
        try:
            document = await client.get_json("/models", auth=False)
        finally:
            await client.aclose()
        from app.routing.catalogue import ModelInfo

        return [
            {**entry, "free": ModelInfo(entry["id"], entry).is_free, "cooldown_until": None}
            for entry in document.get("data") or []
        ]

    return asyncio.run(upstream())


def models(args: argparse.Namespace) -> None:
    rows = _model_rows(load_settings(args.config))
    if args.free:
        rows = [row for row in rows if row.get("free")]
    if args.json:
        print(orjson.dumps(rows).decode())  # noqa: T201
        return
    print(f"{'MODEL':<60} {'FREE':<5} {'CONTEXT':>9}  COOLDOWN UNTIL")  # noqa: T201
    for row in rows:
        cooldown = row.get("cooldown_until")
        until = "-" if cooldown is None else _utc(cooldown)
        context = row.get("context_length") or "-"
        free = "yes" if row.get("free") else "no"
        print(f"{row['id']:<60} {free:<5} {context!s:>9}  {until}")  # noqa: T201


def _utc(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openrouter-proxy",
        description="An OpenAI-compatible proxy in front of OpenRouter.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", type=Path, help="TOML settings file (adds [chains])")
        return sub

    run = command("serve", "serve the proxy (uvicorn, one worker)")
    run.add_argument("--host", help="bind address (PROXY_HOST)")
    run.add_argument("--port", type=int, help="bind port (PROXY_PORT)")
    run.set_defaults(handler=serve)
    command("check", "validate settings, reach upstream, verify the key").set_defaults(
        handler=check
    )
    listing = command("models", "the catalogue as the proxy sees it, with cooldowns")
    listing.add_argument("--free", action="store_true", help="only free models")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=models)
    add_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ConfigError, CommandError, DatabaseError) as error:
        print(f"openrouter-proxy: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except ProxyError as error:
        print(f"openrouter-proxy: {error.message}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
