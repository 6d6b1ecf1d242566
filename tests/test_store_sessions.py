"""Status page sessions: the memory and the Redis store keep the same promises (a session
created is found until it ends or expires), so a login on one replica holds on all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from app.shared.connection import Shared
from app.shared.sessions import RedisSessions
from app.status.sessions import SESSION_SECONDS, MemorySessions, SessionStore
from tests.redis_server import shared_for

pytestmark = pytest.mark.anyio
NOW = 1_790_000_000.0

IMPLEMENTATIONS: dict[str, Callable[[Shared], SessionStore]] = {
    "memory": lambda _: MemorySessions(),
    "redis": RedisSessions,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SessionStore, ...]]:
    """Two stores as two replicas see them (the memory one is one process's only)."""
    async with shared_for(request) as shared:
        one = IMPLEMENTATIONS[request.param](shared)
        other = one if request.param == "memory" else RedisSessions(shared)
        yield one, other


async def test_a_session_is_found_until_it_ends_or_expires(stores):
    one, other = stores
    session = await one.create(NOW)
    assert await other.get(session.id, NOW + 1) == session
    assert await other.get(session.id, NOW + SESSION_SECONDS) is None
    await other.end(session.id)
    assert await one.get(session.id, NOW + 1) is None
    assert await one.get("made-up", NOW) is None
