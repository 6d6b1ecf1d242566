"""Who is calling: a client key from `Authorization: Bearer` or `x-api-key`, or open mode.

`KeyRing` keeps every key in memory, keyed by the secret's hash, so authenticating a
request is a dict lookup. On SQLite it re-reads the table only when another connection
changed the database (`PRAGMA data_version`, a read of the file's header), and checks that
at most every `REFRESH_INTERVAL` seconds, lazily on the request path: a key created or
revoked by `openrouter-proxy keys …` or the admin API is seen within that interval, and no
request ever waits on a query otherwise. On Postgres a task of postgres_team.py polls a
change counter off the request path and hands the ring each new key set (`replace`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.errors import InvalidKey
from app.team.keys import ApiKey, hash_secret, select_keys

REFRESH_INTERVAL = 0.5  # seconds; DESIGN §2 promises a new or revoked key within one

_HOW = "Pass your proxy key as `Authorization: Bearer sk-proxy-…` or `x-api-key: sk-proxy-…`."


@dataclass(frozen=True, slots=True)
class Caller:
    """The client of one request; `key` is None in open mode (no client key exists)."""

    key: ApiKey | None
    # The presented secret that matched `key`'s stored hash, for the redactor: the only
    # client-sent text that is known to be a proxy key ("" in open mode).
    secret: str = field(default="", repr=False, compare=False)

    @property
    def name(self) -> str | None:
        return self.key.name if self.key else None


OPEN = Caller(key=None)


class KeyRing:
    """In-memory snapshot {hash: key} of the keys table, refreshed when the file changes.

    Open mode lasts only while the table has no row at all: revoking the last key does
    not reopen the proxy to anyone (that would silently undo the operator's revocation),
    and neither does a database that vanished and came back empty (DESIGN §7): once the
    ring has held a key, it stays in key mode.
    """

    def __init__(
        self,
        connection: sqlite3.Connection | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Its own connection: data_version ignores its own writes. None: fed by `replace`.
        self._db = connection
        self._clock = clock
        self._by_hash: dict[str, ApiKey] = {}
        self._keyed = False  # a key was read once: never open mode again in this process
        self._version = -1
        self._checked = float("-inf")
        self.refresh()

    @property
    def open_mode(self) -> bool:
        self._maybe_refresh()
        return not self._keyed

    def keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, as of the last refresh."""
        self._maybe_refresh()
        return list(self._by_hash.values())

    def refresh(self) -> None:
        """Re-read the keys when another connection committed a change since last time."""
        self._checked = self._clock()
        if self._db is None:
            return
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self.replace(select_keys(self._db))
            self._version = version

    def replace(self, keys: Iterable[tuple[str, ApiKey]]) -> None:
        """Use this key set, (hash, key) pairs read by a poller, from now on."""
        self._by_hash = dict(keys)
        self._keyed = self._keyed or bool(self._by_hash)

    def reconnect(self, connection: sqlite3.Connection) -> None:
        """Read keys from this connection (a database back at the path) from now on."""
        if self._db is not None:
            self._db.close()
        self._db = connection
        self._version = -1
        self.refresh()

    def _maybe_refresh(self) -> None:
        if self._clock() - self._checked >= REFRESH_INTERVAL:
            self.refresh()

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> Caller:
        """The caller of a request from its two possible key headers; raise InvalidKey."""
        self._maybe_refresh()
        if not self._keyed:
            return OPEN
        presented = [t for t in (_bearer(authorization), (x_api_key or "").strip()) if t]
        if not presented:
            raise InvalidKey(f"Missing API key. {_HOW}")
        revoked: ApiKey | None = None
        for token in presented:
            # Looked up by the secret's SHA-256, never compared to a secret: the lookup's
            # timing can only reveal how the hash of the attacker's own guess compares to
            # stored hashes, which gives no path to a secret (that needs a preimage). So a
            # dict lookup is as safe as hmac.compare_digest against every stored secret.
            key = self._by_hash.get(hash_secret(token))
            if key is None:
                continue
            if key.revoked is None:
                return Caller(key=key, secret=token)
            revoked = key
        if revoked is not None:
            raise InvalidKey(
                f"API key '{revoked.name}' was revoked. Ask the proxy's operator for a new key."
            )
        raise InvalidKey(f"Invalid API key. {_HOW}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
