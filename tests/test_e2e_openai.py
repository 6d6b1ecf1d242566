"""The openai SDK, unchanged, against a live proxy in front of the live fake OpenRouter."""

from __future__ import annotations

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import CLIENT_KEY
from tests.fake_openrouter import FAKE_KEY, SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "Say hello"}]


def test_sync_completion_forwards_key_and_attribution(client: OpenAI, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="Hi there"))

    completion = client.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == "Hi there"
    assert completion.model == SCOUT
    (sent,) = fake.chat_requests()
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.headers["http-referer"] == "http://localhost"
    assert sent.headers["x-title"] == "openrouter-proxy"
    assert sent.headers["x-openrouter-title"] == "openrouter-proxy"
    assert CLIENT_KEY not in str(sent.headers)


def test_client_attribution_wins_and_title_goes_up_under_both_names(
    proxy: LiveServer, fake: FakeOpenRouter
):
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": SCOUT, "messages": HELLO},
        headers={
            "Authorization": f"Bearer {CLIENT_KEY}",
            "HTTP-Referer": "https://my-app.example",
            "X-Title": "My App",
            "Cookie": "session=secret",
            "Connection": "keep-alive, x-hop",
            "X-Hop": "1",
        },
    )
    assert response.status_code == 200
    (sent,) = fake.chat_requests()
    assert sent.headers["http-referer"] == "https://my-app.example"
    assert sent.headers["x-title"] == sent.headers["x-openrouter-title"] == "My App"
    assert "cookie" not in sent.headers and "x-hop" not in sent.headers
    assert sent.headers["authorization"] == f"Bearer {FAKE_KEY}"


def test_body_passes_through_with_unknown_fields(proxy: LiveServer, fake: FakeOpenRouter):
    body = {
        "model": SCOUT,
        "messages": HELLO,
        "provider": {"order": ["Groq"], "allow_fallbacks": False},
        "reasoning": {"effort": "low"},
        "plugins": [{"id": "web"}],
        "x_custom": [1, {"nested": True}],
    }
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert fake.chat_requests()[0].json == body
    assert response.headers["x-proxy-model"] == SCOUT
    assert response.headers["x-proxy-attempts"] == "1"
    assert response.headers["x-generation-id"].startswith("gen-")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_completion_parses_in_the_sdk(
    client: OpenAI, fake: FakeOpenRouter, include_usage: bool
):
    fake.script(SCOUT, Reply(content="one two three", chunks=3, keepalives=3))

    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(model=SCOUT, messages=HELLO, stream=True, **options)  # type: ignore[call-overload]
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    # The usage-only chunk (choices: []) comes only when asked for, as with OpenAI; without
    # it, user code doing `chunk.choices[0]` works on every chunk.
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == (1 if include_usage else 0)
    assert all(c.choices for c in chunks) is not include_usage
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_stream_bytes_are_relayed_unchanged_without_keepalives_before_content(
    proxy: LiveServer, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="abc", chunks=3, keepalives=2))
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        json={
            "model": SCOUT,
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},  # else the usage-only chunk is dropped
        },
    ) as response:
        received = b"".join(response.iter_raw())
    assert response.headers["content-type"].startswith("text/event-stream")
    (sent,) = fake.chat_requests()
    upstream = b"".join(part for _, part in fake.sent_parts[sent.request_id])
    data_start = upstream.index(b"data:")
    assert b"OPENROUTER PROCESSING" in upstream[:data_start]
    assert received == upstream[data_start:]  # every byte after the keep-alives, as sent


@pytest.mark.anyio
async def test_async_client_streams_and_completes(proxy: LiveServer, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="async hello"), Reply(content="async stream"))
    async with AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]
        stream = await sdk.chat.completions.create(model=SCOUT, messages=HELLO, stream=True)  # type: ignore[arg-type]
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert completion.choices[0].message.content == "async hello"
    assert "".join(parts) == "async stream"


def test_models_list_and_retrieve(client: OpenAI):
    listed = {m.id: m for m in client.models.list()}
    assert SCOUT in listed and "openai/gpt-4o-mini" in listed and "free" in listed
    scout = client.models.retrieve(SCOUT)  # sent as meta-llama%2Fllama-4-scout:free
    assert scout.id == SCOUT and scout.object == "model" and scout.owned_by == "meta-llama"
    extra = scout.model_dump()
    assert extra["free"] is True and extra["cooldown_until"] is None
    assert extra["context_length"] == 131072 and extra["pricing"]["prompt"] == "0"
    assert listed["free"].owned_by == "openrouter-proxy"
    assert listed["openai/gpt-4o-mini"].model_dump()["free"] is False


def test_model_ids_with_literal_slash_and_unknown_ids(proxy: LiveServer):
    ok = httpx.get(f"{proxy.url}/v1/models/{SCOUT}")
    assert ok.status_code == 200 and ok.json()["id"] == SCOUT
    missing = httpx.get(f"{proxy.url}/v1/models/acme/nothing-1")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_router_and_image_models_are_not_free(client: OpenAI):
    listed = {m.id: m.model_dump() for m in client.models.list()}
    assert listed["openrouter/auto"]["free"] is False  # priced "-1"
    assert listed["google/gemini-2.5-flash-image-preview"]["free"] is False  # image_output
    assert listed["openrouter/optimus-alpha"]["free"] is True  # zero-priced, no suffix
    assert "openrouter/free" not in listed["free"]["chain"]
    assert "openrouter/optimus-alpha" in listed["free"]["chain"]
