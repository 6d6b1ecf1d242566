"""Admin sessions of the status page (DESIGN §13): an opaque random id in an HttpOnly,
SameSite=Strict cookie, kept server-side with its CSRF token and ended 12 h after login or
at logout, and failed logins limited per client address.

The id is a random token, never a key or anything derived from one, so a stolen cookie
cannot be replayed after logout or expiry, and a client key never opens the page.
`SessionStore` is the small protocol a shared (Redis) store implements for replicas;
`MemorySessions` is the in-process one, bounded so a login flood cannot grow it.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

SESSION_SECONDS = 12 * 3600
COOKIE = "proxy_status_session"
# Failed logins allowed per client address per LOGIN_WINDOW seconds, then 429.
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW = 60.0
MAX_SESSIONS = 1024
MAX_ADDRESSES = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires: float


class SessionStore(Protocol):
    async def create(self, now: float) -> Session: ...

    async def get(self, session_id: str, now: float) -> Session | None:
        """The live session with this id, or None (unknown, ended or expired)."""

    async def end(self, session_id: str) -> None: ...


class MemorySessions:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    async def create(self, now: float) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)  # the oldest login goes first
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + SESSION_SECONDS
        )
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str, now: float) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.expires <= now:
            self._sessions.pop(session_id, None)
            return None
        return session

    async def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class LoginLimiter:
    """At most LOGIN_ATTEMPTS failed logins per address in any LOGIN_WINDOW seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: TTLCache[str, deque[float]] = TTLCache(MAX_ADDRESSES, LOGIN_WINDOW, clock)

    def retry_after(self, address: str) -> float | None:
        """Seconds until this address may try again, or None when it may now."""
        now = self._clock()
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - LOGIN_WINDOW:
            failures.popleft()
        if len(failures) < LOGIN_ATTEMPTS:
            return None
        return failures[0] + LOGIN_WINDOW - now

    def failed(self, address: str) -> None:
        failures = self._failures.get(address) or deque(maxlen=LOGIN_ATTEMPTS)
        failures.append(self._clock())
        self._failures[address] = failures
