"""Client keys: `sk-proxy-…` secrets stored only as hashes, with their limits and models.

The secret is shown once, when created; the database keeps its SHA-256 and a short prefix
so `keys list` can tell keys apart. A plain (unsalted, fast) hash is enough here because
the secret is 256 bits from `secrets`: nobody can guess or brute-force a preimage, so the
slow salted hashes that protect human passwords would add cost and nothing else.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import InvalidRequest, KeyExists, NotFound

SECRET_PREFIX = "sk-proxy-"
SHOWN_CHARS = 12  # `sk-proxy-` and three random characters: enough to tell keys apart
# Names appear in logs, metrics labels and messages: keep them plain (no spaces, quotes
# or control characters that could forge a log line).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
LIMITS = ("rpm", "rpd", "tpd", "concurrency")
MAX_LIMIT = 2**63 - 1  # SQLite's largest INTEGER; a larger limit could not be stored


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    prefix: str
    created: float
    revoked: float | None
    rpm: int | None
    rpd: int | None
    tpd: int | None
    concurrency: int | None
    models: tuple[str, ...]  # shell globs such as "*:free"; empty = every model
    paid: bool

    @property
    def limits(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "rpd": self.rpd, "tpd": self.tpd, "concurrency": self.concurrency}

    def public(self) -> dict[str, Any]:
        """The key as the HTTP API and `keys list --json` show it; never the secret."""
        return {
            "name": self.name,
            "prefix": self.prefix,
            "created": self.created,
            "revoked": self.revoked,
            "limits": self.limits,
            "models": list(self.models),
            "paid": self.paid,
        }


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_COLUMNS = "name, prefix, created, revoked, rpm, rpd, tpd, concurrency, models, paid"
# The statements both engines run (`?` placeholders; postgres.py swaps them for `%s`).
INSERT_KEY = f"INSERT INTO keys (hash, {_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)"
REVOKE_KEY = "UPDATE keys SET revoked = ? WHERE name = ? AND revoked IS NULL"
SELECT_KEY = f"SELECT {_COLUMNS} FROM keys WHERE name = ?"
SELECT_KEYS = f"SELECT hash, {_COLUMNS} FROM keys ORDER BY created, name"


def key_from_row(row: Sequence[Any]) -> ApiKey:
    name, prefix, created, revoked, rpm, rpd, tpd, concurrency, models, paid = row
    return ApiKey(
        name=name,
        prefix=prefix,
        created=created,
        revoked=revoked,
        rpm=rpm,
        rpd=rpd,
        tpd=tpd,
        concurrency=concurrency,
        models=tuple(orjson.loads(models)),
        paid=bool(paid),
    )


def new_key(
    name: str,
    now: float,
    *,
    rpm: int | None = None,
    rpd: int | None = None,
    tpd: int | None = None,
    concurrency: int | None = None,
    models: Iterable[str] = (),
    paid: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """A new key's secret and its INSERT_KEY parameters; InvalidRequest naming a bad field."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit",
            param="name",
        )
    for limit, value in zip(LIMITS, (rpm, rpd, tpd, concurrency), strict=True):
        if value is not None and (isinstance(value, bool) or not 1 <= value <= MAX_LIMIT):
            raise InvalidRequest(
                f"{limit} must be a whole number from 1 to {MAX_LIMIT} (leave it out for no limit)",
                param=limit,
            )
    patterns = [p.strip() for p in models if p.strip()]
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)  # 43 URL-safe characters
    row = (
        hash_secret(secret),
        name,
        secret[:SHOWN_CHARS],
        now,
        rpm,
        rpd,
        tpd,
        concurrency,
        orjson.dumps(patterns).decode(),
        int(paid),
    )
    return secret, row


def key_exists(name: str) -> KeyExists:
    return KeyExists(
        f"a key named '{name}' already exists (names of revoked keys are not reused); "
        "pick another name",
        param="name",
    )


def no_such_key(name: str) -> NotFound:
    return NotFound(f"no key named '{name}'; `openrouter-proxy keys list` shows them")


def select_keys(connection: sqlite3.Connection) -> list[tuple[str, ApiKey]]:
    """Every key with its hash, oldest first."""
    return [(row[0], key_from_row(row[1:])) for row in connection.execute(SELECT_KEYS)]


class KeyTable:
    """The keys table of one SQLite connection: create, revoke, get and list. Synchronous
    and small (each call is one statement); `SqliteKeyStore` runs it off the event loop."""

    def __init__(
        self, connection: sqlite3.Connection, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = connection
        self._clock = clock

    @property
    def connection(self) -> sqlite3.Connection:
        """For read queries (usage summaries) that run where this store's calls run."""
        return self._db

    def reconnect(self, connection: sqlite3.Connection) -> None:
        """Use this connection (a database back at the path) from now on."""
        self._db.close()
        self._db = connection

    def create(self, name: str, **limits: Any) -> str:
        """Store a new key and return its secret, which is never shown again."""
        secret, row = new_key(name, self._clock(), **limits)
        try:
            self._db.execute(INSERT_KEY, row)
        except sqlite3.IntegrityError:
            raise key_exists(name) from None
        return secret

    def revoke(self, name: str) -> ApiKey:
        """Revoke the key (idempotent: a revoked key keeps its first revocation time)."""
        self._db.execute(REVOKE_KEY, (self._clock(), name))
        return self.get(name)

    def get(self, name: str) -> ApiKey:
        row = self._db.execute(SELECT_KEY, (name,)).fetchone()
        if row is None:
            raise no_such_key(name)
        return key_from_row(row)

    def list(self) -> builtins.list[ApiKey]:
        return [key for _, key in select_keys(self._db)]

    def close(self) -> None:
        self._db.close()
