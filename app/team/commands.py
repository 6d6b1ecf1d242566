"""`openrouter-proxy keys create|list|revoke` and `openrouter-proxy usage` (DESIGN §2).

They work on the same database file as a running server, which sees a change within a
second. `keys create` prints only the secret, so `KEY=$(openrouter-proxy keys create …)`
works; every failure is one line on stderr (cli.main prints it).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from app.config import load_settings
from app.team.db import describe, open_database
from app.team.keys import KeyStore
from app.team.usage import usage_summary

CommandFactory = Callable[[str, str], argparse.ArgumentParser]


def add_commands(command: CommandFactory) -> None:
    """Register `keys …` and `usage` through cli.py's factory (which adds --config)."""
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


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[KeyStore]:
    """The key store on the configured database, closed after; a SQLite failure on the way
    (another process locking the file after it opened) is one DatabaseError line too."""
    settings = load_settings(getattr(args, "config", None))
    store = KeyStore(open_database(settings.db_path))
    try:
        yield store
    except sqlite3.Error as exc:
        raise describe(settings.db_path, exc) from None
    finally:
        store.close()


def keys_create(args: argparse.Namespace) -> None:
    with _store(args) as store:
        secret = store.create(
            args.name,
            rpm=args.rpm,
            rpd=args.rpd,
            tpd=args.tpd,
            concurrency=args.concurrency,
            models=args.models,
            paid=args.paid,
        )
    print(secret)  # noqa: T201


def keys_list(args: argparse.Namespace) -> None:
    with _store(args) as store:
        keys = store.list()
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
    with _store(args) as store:
        store.revoke(args.name)


def usage_report(args: argparse.Namespace) -> None:
    with _store(args) as store:
        rows = usage_summary(store.connection, key=args.key, days=args.days)
    if args.json:
        print(orjson.dumps(rows).decode())  # noqa: T201
        return
    header = ["KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "COST"]
    body = [
        [
            row["key"] or "(open mode)",
            row["model"] or "-",
            *(str(row[f]) for f in ("requests", "errors", "prompt_tokens", "completion_tokens")),
            "-" if row["cost"] is None else f"{row['cost']:.6f}",
        ]
        for row in rows
    ]
    _table([header, *body])


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())  # noqa: T201


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))
