"""One log line per request, text or JSON, with no key, prompt or answer in it."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from app.main import create_app
from app.request_log import configure_logging
from tests.conftest import CLIENT_KEY, make_settings
from tests.fake_openrouter import FAKE_KEY, SCOUT, FakeOpenRouter, Reply, bad_request_400

pytestmark = pytest.mark.anyio
PROMPT = "my very private prompt"


@pytest.fixture
def restore_logging():
    logger = logging.getLogger("openrouter_proxy")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


async def run_requests(fake: FakeOpenRouter) -> None:
    app = create_app(make_settings("http://fake"), transport=httpx.ASGITransport(fake.app))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app),
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    ) as proxy:
        body = {"model": SCOUT, "messages": [{"role": "user", "content": PROMPT}]}
        assert (await proxy.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await proxy.post("/v1/chat/completions", json=body)).status_code == 400


@pytest.mark.usefixtures("restore_logging")
async def test_json_format_is_one_json_object_per_request(capfd):
    fake = FakeOpenRouter()
    fake.script(SCOUT, Reply(content="secret answer"), bad_request_400("nope"))
    configure_logging("info", "json")
    await run_requests(fake)
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    requests = [line for line in lines if line["logger"] == "openrouter_proxy.request"]
    assert [r["status"] for r in requests] == [200, 400]
    assert requests[0]["served"] == SCOUT and requests[0]["attempts"] == 1
    assert requests[1]["error"] == "400"


@pytest.mark.usefixtures("restore_logging")
async def test_logs_carry_no_secrets_prompts_or_answers(capfd):
    fake = FakeOpenRouter()
    fake.script(SCOUT, Reply(content="secret answer"), bad_request_400("nope"))
    configure_logging("debug", "text")
    await run_requests(fake)
    err = capfd.readouterr().err
    assert "status=200" in err and f"served={SCOUT}" in err
    for secret in (FAKE_KEY, CLIENT_KEY, PROMPT, "secret answer"):
        assert secret not in err
