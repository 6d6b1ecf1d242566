"""The catalogue is fetched once per 5 minutes and served stale while OpenRouter fails."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.fake_openrouter import FakeOpenRouter

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def proxy_for(fake: FakeOpenRouter, clock: Clock) -> httpx.AsyncClient:
    app = create_app(
        make_settings("http://fake"), transport=httpx.ASGITransport(fake.app), clock=clock
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost")


def catalogue_fetches(fake: FakeOpenRouter) -> int:
    return sum(r.path == "/api/v1/models" for r in fake.requests)


async def test_cached_for_five_minutes_then_refreshed():
    fake, clock = FakeOpenRouter(), Clock()
    async with proxy_for(fake, clock) as proxy:
        assert (await proxy.get("/v1/models")).status_code == 200
        clock.now += 299
        await proxy.get("/v1/models")
        assert catalogue_fetches(fake) == 1
        fake.models = [m for m in fake.models if m["id"] != "openai/gpt-4o-mini"]
        clock.now += 2
        ids = {m["id"] for m in (await proxy.get("/v1/models")).json()["data"]}
    assert catalogue_fetches(fake) == 2
    assert "openai/gpt-4o-mini" not in ids


async def test_served_stale_while_upstream_fails_and_502_when_never_fetched():
    fake, clock = FakeOpenRouter(), Clock()
    async with proxy_for(fake, clock) as proxy:
        fresh = (await proxy.get("/v1/models")).json()
        fake.models_fail = True
        clock.now += 3600
        stale = await proxy.get("/v1/models")
        assert stale.status_code == 200 and stale.json() == fresh
    async with proxy_for(fake, clock) as cold:
        failed = await cold.get("/v1/models")
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "upstream_error"
