"""`openrouter-proxy keys create|list|revoke`, `usage` and `db copy` (DESIGN §2).

They work on the same database as a running server (the SQLite file, or Postgres with
PROXY_DATABASE_URL), which sees a change within a second. `keys create` prints only the
secret, so `KEY=$(openrouter-proxy keys create …)` works; every failure is one line on
stderr (cli.main prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from app.config import load_settings
from app.team.copy import copy_database
from app.team.database import database_of, open_stores
from app.team.stores import KeyStore, UsageStore

T = TypeVar("T")

CommandFactory = Callable[[str, str], argparse.ArgumentParser]


def add_commands(command: CommandFactory) -> None:
    """Register `keys …`, `usage` and `db copy` through cli.py's factory (which adds
    --config)."""
    keys = command("keys", "create, list and revoke client keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        # Also accepted after the action; SUPPRESS keeps a value given before it.
        sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    create = action("create", "create a key and print its secret (shown only this once)")
    create.add_argument("name", help="key name, shown in logs and usage")
    for limit, meaning in (
        ("rpm", "requests per minute (sliding 60 s)"),
        ("rpd", "requests per UTC day"),
        ("tpd", "tokens per UTC day"),
        ("concurrency", "requests in flight at once"),
    ):
        create.add_argument(f"--{limit}", type=_positive, metavar="N", help=meaning)
    create.add_argument(
        "--models",
        type=_patterns,
        default=(),
        metavar="PATTERN[,PATTERN…]",
        help="models the key may use, as shell globs such as '*:free' (default: every model)",
    )
    create.add_argument(
        "--paid", action="store_true", help="may use priced models (default: free models only)"
    )
    create.set_defaults(handler=keys_create)

    listing = action("list", "list keys (their prefix, never the secret)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=keys_list)

    revoke = action("revoke", "revoke a key; a running server refuses it within a second")
    revoke.add_argument("name")
    revoke.set_defaults(handler=keys_revoke)

    usage = command("usage", "requests, tokens and cost per key and model")
    usage.add_argument("--key", metavar="NAME", help="only this key")
    usage.add_argument(
        "--days", type=_positive, default=7, metavar="N", help="last N UTC days (default 7)"
    )
    usage.add_argument("--json", action="store_true", help="print a JSON array")
    usage.set_defaults(handler=usage_report)

    db = command("db", "move keys and usage between databases")
    db_actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    copy = db_actions.add_parser(
        "copy",
        help="copy keys, usage records and daily totals into an empty database",
        description="FROM_URL and TO_URL are sqlite:///PATH (sqlite:////ABSOLUTE/PATH) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE; TO_URL must hold no keys or usage.",
    )
    copy.add_argument("source", metavar="FROM_URL")
    copy.add_argument("target", metavar="TO_URL")
    copy.set_defaults(handler=db_copy)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (leave it out for no limit): {text}")
    return value


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _run(args: argparse.Namespace, command: Callable[[KeyStore, UsageStore], Awaitable[T]]) -> T:
    """Run `command` on the stores of the configured database (SQLite or Postgres)."""
    settings = load_settings(getattr(args, "config", None))

    async def run() -> T:
        async with open_stores(database_of(settings)) as (keys, usage):
            return await command(keys, usage)

    return asyncio.run(run())


def keys_create(args: argparse.Namespace) -> None:
    secret = _run(
        args,
        lambda keys, _: keys.create(
            args.name,
            rpm=args.rpm,
            rpd=args.rpd,
            tpd=args.tpd,
            concurrency=args.concurrency,
            models=args.models,
            paid=args.paid,
        ),
    )
    print(secret)  # noqa: T201


def keys_list(args: argparse.Namespace) -> None:
    keys = _run(args, lambda keys, _: keys.list())
    if args.json:
        print(orjson.dumps([key.public() for key in keys]).decode())  # noqa: T201
        return
    rows = [
        [
            key.name,
            key.prefix + "…",
            _utc(key.created),
            _utc(key.revoked) if key.revoked else "-",
            *(_dash(v) for v in key.limits.values()),
            ",".join(key.models) or "*",
            "yes" if key.paid else "no",
        ]
        for key in keys
    ]
    header = ["NAME", "PREFIX", "CREATED", "REVOKED", "RPM", "RPD", "TPD", "CONC", "MODELS"]
    _table([[*header, "PAID"], *rows])


def keys_revoke(args: argparse.Namespace) -> None:
    _run(args, lambda keys, _: keys.revoke(args.name))


_SUMMED = ("requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "cost")


def usage_report(args: argparse.Namespace) -> None:
    """`--json`: the daily totals' rows (DESIGN §2); the table sums them per key and model."""
    rows = _run(args, lambda _, usage: usage.totals(key=args.key, days=args.days, now=time.time()))
    if args.json:
        print(orjson.dumps(rows).decode())  # noqa: T201
        return
    sums: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        group = (row["key"] or "(open mode)", row["model"] or "-")
        total = sums.setdefault(group, [0, 0, 0, 0, 0, 0.0])
        for i, field in enumerate(_SUMMED):
            total[i] += row[field]
    header = ["KEY", "MODEL", "REQUESTS", "ERRORS", "HITS", "PROMPT", "COMPLETION", "COST"]
    body = [
        [*group, *(str(v) for v in total[:5]), f"{total[5]:.6f}"]
        for group, total in sorted(sums.items())
    ]
    _table([header, *body])


def db_copy(args: argparse.Namespace) -> None:
    counts = asyncio.run(copy_database(args.source, args.target))
    print(  # noqa: T201
        f"copied {counts['keys']} keys, {counts['usage']} usage records and "
        f"{counts['usage_daily']} daily totals"
    )


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())  # noqa: T201


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))
