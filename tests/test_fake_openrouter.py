"""Self-test of the fake OpenRouter over real HTTP, so proxy tests can trust what it sends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_openrouter import (
    CATALOGUE,
    FAKE_KEY,
    CutOff,
    Drop,
    ErrorBody200,
    FakeOpenRouter,
    FinishError200,
    Reply,
    Stall,
    WhitespaceOnly,
    error_200,
    provider_429,
    unavailable_503,
)
from tests.live_server import LiveServer

AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}
MSG = [{"role": "user", "content": "hi"}]
FREE = "meta-llama/llama-4-scout:free"
PAID = "openai/gpt-4o-mini"
REQUIRED = {
    "id",
    "canonical_slug",
    "name",
    "created",
    "pricing",
    "context_length",
    "architecture",
    "top_provider",
    "per_request_limits",
    "supported_parameters",
    "default_parameters",
    "supported_voices",
    "links",
}


class Clock:
    """Injectable wall clock, so minute/day windows are tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_790_000_030.0)


@pytest.fixture
def fake(clock: Clock) -> FakeOpenRouter:
    return FakeOpenRouter(clock=clock)


@pytest.fixture
def client(fake: FakeOpenRouter) -> Iterator[httpx.Client]:
    with LiveServer(fake.app) as server:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=5.0) as c:
            yield c


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post(
        "/chat/completions", headers=AUTH, json={"model": model, "messages": MSG, **extra}
    )


def events(text: str) -> list[str]:
    """Split an SSE body into its raw events (comments kept)."""
    return [e for e in text.split("\n\n") if e]


def data(event: str) -> Any:
    assert event.startswith("data: "), event
    payload = event[len("data: ") :]
    return payload if payload == "[DONE]" else json.loads(payload)


def test_catalogue_shape(client: httpx.Client, fake: FakeOpenRouter) -> None:
    body = client.get("/models").json()  # no auth needed
    assert body["links"] == {"next": None} and body["total_count"] == len(body["data"])
    by_id = {m["id"]: m for m in body["data"]}
    assert len(by_id) == len(CATALOGUE) == 13
    for m in body["data"]:
        assert REQUIRED <= m.keys()
        assert {"modality", "input_modalities", "output_modalities"} <= m["architecture"].keys()
        assert all(isinstance(v, str) for k, v in m["pricing"].items() if k != "discount")
    assert by_id[PAID]["pricing"]["discount"] == 0
    assert by_id["openrouter/auto"]["pricing"]["prompt"] == "-1"
    assert by_id["openrouter/auto"]["context_length"] is None
    assert set(by_id["openrouter/free"]["pricing"].values()) == {"0"}
    assert by_id["google/gemini-2.5-flash-image-preview"]["pricing"]["image_output"] != "0"
    assert "tools" not in by_id["deepseek/deepseek-r1:free"]["supported_parameters"]
    fake.models_fail = True
    assert client.get("/models").status_code == 500


def test_auth_errors_and_key(client: httpx.Client) -> None:
    missing = client.get("/key")
    assert missing.status_code == 401
    assert missing.json() == {"error": {"message": "No auth credentials found", "code": 401}}
    wrong = client.post("/chat/completions", headers={"Authorization": "Bearer sk-or-v1-x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "User not found."
    for path in ("/key", "/auth/key"):
        info = client.get(path, headers=AUTH).json()["data"]
        assert info["free_model_daily_requests"] == {"limit": 50, "remaining": 50, "used": 0}
        assert info["rate_limit"]["note"].startswith("This field is deprecated")


def test_non_stream_reply(client: httpx.Client) -> None:
    r = chat(client, PAID, stream=False)
    assert r.status_code == 200
    assert r.content[:1] == b"{"
    r = client.post(
        "/chat/completions",
        headers=AUTH,
        json={"model": "openrouter/auto", "messages": MSG},
    )
    body = r.json()
    assert body["model"] == PAID  # the model that actually answered
    assert r.headers["x-generation-id"] == body["id"]
    assert body["id"].startswith("gen-") and len(body["id"].split("-")[2]) == 20
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hello from the fake"
    assert choice["finish_reason"] == choice["native_finish_reason"] == "stop"
    assert body["usage"]["cost"] > 0 and "x-ratelimit-limit" not in r.headers


def test_leading_whitespace_arrives_before_json(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, Reply(leading_whitespace=3, first_byte_delay=0.2))
    with client.stream("POST", "/chat/completions", headers=AUTH, json={"model": PAID}) as r:
        parts = list(r.iter_raw())
    assert parts[0].isspace() and len(parts[0]) == 3
    assert json.loads(b"".join(parts))["model"] == PAID


def test_stream_order(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(FREE, Reply(content="abcdef", chunks=3, keepalives=2))
    r = chat(client, FREE, stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    ev = events(r.text)
    assert ev[:2] == [": OPENROUTER PROCESSING"] * 2
    chunks = [data(e) for e in ev[2:]]
    assert chunks[-1] == "[DONE]"
    role, *content, finish, usage, _ = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["ab", "cd", "ef"]
    assert role["object"] == "chat.completion.chunk" and role["model"] == FREE
    assert {"id", "provider", "created"} <= role.keys()
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["native_finish_reason"] == "stop"
    assert usage["choices"] == [] and "cost" in usage["usage"]
    assert len({c["id"] for c in chunks[:-1]}) == 1


def test_scripted_429_then_success_and_fallback_walk(
    client: httpx.Client, fake: FakeOpenRouter
) -> None:
    fake.script(FREE, provider_429(FREE), Reply(content="second"))
    first = chat(client, FREE)
    assert first.status_code == 429
    err = first.json()["error"]
    assert err["message"] == "Provider returned error"
    assert err["metadata"]["limit_source"] == "upstream_provider_shared_pool"
    assert "rate-limited upstream" in err["metadata"]["raw"]
    assert chat(client, FREE).json()["choices"][0]["message"]["content"] == "second"
    assert chat(client, FREE).json()["choices"][0]["message"]["content"] == "Hello from the fake"
    # OpenRouter-native `models` walk: the answer names the model that succeeded.
    fake.script("qwen/qwen3-coder:free", unavailable_503(7))
    walked = chat(client, "x", models=["qwen/qwen3-coder:free", "nope/none", PAID])
    assert walked.status_code == 200 and walked.json()["model"] == PAID
    assert fake.attempts[-3:] == ["qwen/qwen3-coder:free", "nope/none", PAID]
    fake.script(FREE, unavailable_503(7))
    failed = chat(client, FREE, models=["nope/none", FREE])
    assert failed.status_code == 503 and failed.headers["retry-after"] == "7"
    too_many = chat(client, FREE, models=[FREE, PAID, PAID, PAID])
    assert too_many.json()["error"]["message"] == "models array must have 3 items or fewer"
    assert chat(client, "acme/fake-1.0").json()["error"]["message"] == (
        "acme/fake-1.0 is not a valid model ID"
    )
    assert len(fake.chat_requests()) == 7


def test_free_limits_with_injected_clock(
    client: httpx.Client, fake: FakeOpenRouter, clock: Clock
) -> None:
    fake.free_rpm = 2
    assert chat(client, FREE).status_code == 200
    assert chat(client, "qwen/qwen3-coder:free").status_code == 200  # one account-wide bucket
    limited = chat(client, FREE)
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    reset = str((int(clock.now // 60) + 1) * 60_000)
    assert limited.headers["x-ratelimit-reset"] == reset
    assert limited.headers["x-ratelimit-limit"] == "2"
    err = limited.json()["error"]
    assert err["message"] == "Rate limit exceeded: free-models-per-min. "
    assert err["metadata"] == {
        "headers": {
            "X-RateLimit-Limit": "2",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset,
        },
        "provider_name": None,
    }
    assert chat(client, PAID).status_code == 200  # paid models are not capped
    clock.now += 60
    assert chat(client, FREE).status_code == 200
    fake.free_rpd = 5  # 4 free attempts so far today, the 429 included
    assert chat(client, FREE).status_code == 200
    daily = chat(client, FREE)
    meta = daily.json()["error"]["metadata"]
    assert daily.status_code == 429 and meta["limit_source"] == "openrouter_free_tier_daily"
    assert int(daily.headers["x-ratelimit-reset"]) % 86_400_000 == 0
    quota = client.get("/key", headers=AUTH).json()["data"]["free_model_daily_requests"]
    assert quota == {"limit": 5, "remaining": 0, "used": 6}
    fake.provider_rpm[PAID] = 1
    assert chat(client, PAID).status_code == 200
    assert chat(client, PAID).json()["error"]["metadata"]["provider_name"] == "Venice"


def test_in_band_errors(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, error_200(), error_200(), FinishError200(done=False), FinishError200())
    body = chat(client, PAID).json()
    assert "choices" not in body and body["error"]["code"] == 429 and "user_id" in body
    ev = events(chat(client, PAID, stream=True).text)
    assert ev[0] == ": OPENROUTER PROCESSING" and len(ev) == 2
    assert data(ev[1]).keys() == {"error", "user_id"}
    ev = events(chat(client, PAID, stream=True).text)
    last = data(ev[-1])
    assert last["error"]["code"] == 429 and last["choices"][0]["finish_reason"] == "error"
    body = chat(client, PAID).json()
    assert body["choices"][0]["finish_reason"] == "error" and body["choices"][0]["error"]
    assert isinstance(ErrorBody200({}).error, dict)


def test_broken_bodies(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, WhitespaceOnly(), CutOff(), Drop(after_chunks=1))
    blank = chat(client, PAID)
    assert blank.status_code == 200 and blank.content.isspace()
    with pytest.raises(json.JSONDecodeError):
        chat(client, PAID).json()
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, PAID, stream=True)


def test_stall_keeps_alive_then_replies(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, Stall(0.3))
    started = time.monotonic()
    ev = events(chat(client, PAID, stream=True).text)
    assert time.monotonic() - started >= 0.3
    assert ev.count(": OPENROUTER PROCESSING") >= 5 and ev[-1] == "data: [DONE]"


def test_disconnect_recorded_and_chunks_really_stream(
    client: httpx.Client, fake: FakeOpenRouter
) -> None:
    fake.script(PAID, Reply(chunks=5, chunk_delay=0.3))
    body = {"model": PAID, "messages": MSG, "stream": True}
    headers = {**AUTH, "X-Request-Id": "abc"}
    with client.stream("POST", "/chat/completions", headers=headers, json=body) as r:
        lines = r.iter_lines()
        while '"content":"H' not in next(lines):
            pass
        got_first = time.monotonic()
    assert fake.closed_event.wait(2.0)
    assert fake.closed_early == ["abc"]
    sent = fake.sent_at["abc"]  # role chunk, content 1, maybe content 2 - never all 5
    assert len(sent) < 5
    assert len(sent) == 2 or got_first < sent[2]


@pytest.mark.anyio
async def test_wait_closed_async(fake: FakeOpenRouter) -> None:
    fake.script(PAID, Reply(first_byte_delay=5.0))
    with LiveServer(fake.app) as server:
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as c:
            body = {"model": PAID, "stream": True}
            async with c.stream("POST", "/chat/completions", headers=AUTH, json=body) as r:
                assert r.status_code == 200  # headers are committed before the first token
        assert await fake.wait_closed(2.0)
