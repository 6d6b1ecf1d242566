"""Status page sessions in Redis (DESIGN §12, §13): a login on one replica is valid on
every replica, and a logout ends it on all; each session expires with its key."""

from __future__ import annotations

import secrets

import orjson

from app.shared.connection import Shared
from app.status.sessions import SESSION_SECONDS, Session


class RedisSessions:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    def _key(self, session_id: str) -> str:
        return self._shared.key("session", session_id)

    async def create(self, now: float) -> Session:
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + SESSION_SECONDS
        )
        value = orjson.dumps([session.csrf, session.expires])
        await self._shared.client.set(self._key(session.id), value, ex=SESSION_SECONDS)
        return session

    async def get(self, session_id: str, now: float) -> Session | None:
        value = await self._shared.client.get(self._key(session_id))
        if value is None:
            return None
        csrf, expires = orjson.loads(value)
        return Session(session_id, csrf, expires) if expires > now else None

    async def end(self, session_id: str) -> None:
        await self._shared.client.delete(self._key(session_id))
