"""Malformed upstream data is an upstream failure, never a 500 (DESIGN §5): odd catalogue
entries are skipped, odd first events are broken attempts, an odd mid-stream error still
ends the stream cleanly, and odd header values are dropped without losing the answer."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.fake_openrouter import DEEPSEEK, QWEN, SCOUT, FakeOpenRouter, Raw, Reply, error_200

HELLO = [{"role": "user", "content": "hi"}]


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CONTENT = _event({"id": "g", "choices": [{"index": 0, "delta": {"content": "Hel"}}]})
ANSWER = json.dumps(
    {
        "id": "gen-1",
        "object": "chat.completion",
        "model": SCOUT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    }
).encode()


def chat(url: str, model: str, *, stream: bool = False, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "stream": stream, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_malformed_catalogue_entries_are_skipped(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    good = dict(fake.models[0])
    fake.models += [
        {**good, "id": "bad/pricing-list:free", "pricing": ["0", "0"]},
        {**good, "id": "bad/architecture-string:free", "architecture": "text->text"},
        {**good, "id": "bad/modalities:free", "architecture": {"output_modalities": "text"}},
        {**good, "id": "bad/params:free", "supported_parameters": "tools"},
    ]
    with start_proxy() as proxy:
        listing = httpx.get(f"{proxy.url}/v1/models")
        assert listing.status_code == 200
        ids = {card["id"] for card in listing.json()["data"]}
        assert SCOUT in ids and not any(i.startswith("bad/") for i in ids)
        assert chat(proxy.url, "free").status_code == 200


@pytest.mark.parametrize(
    "first",
    [
        _event({"choices": 5}),
        _event({"choices": [{"delta": "oops"}]}),
        _event({"choices": ["x", {"delta": None, "finish_reason": None}]}),
        _event({"error": "boom"}),
        _event([1, 2]),
    ],
)
def test_a_malformed_first_event_is_a_broken_attempt(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, first: bytes
) -> None:
    fake.script(SCOUT, Raw((first, b"data: [DONE]\n\n")))
    # A lone candidate that breaks is tried once more (DESIGN §6): both attempts break.
    fake.script(DEEPSEEK, Raw((first, b"data: [DONE]\n\n")), Raw((first, b"data: [DONE]\n\n")))
    with start_proxy() as proxy:
        moved_on = chat(proxy.url, SCOUT, stream=True, models=[QWEN])
        assert moved_on.status_code == 200, moved_on.text
        assert moved_on.headers["x-proxy-model"] == QWEN
        alone = chat(proxy.url, DEEPSEEK, stream=True)
    assert alone.status_code == 502, alone.text
    assert alone.json()["error"]["message"]


def test_a_mid_stream_string_error_ends_the_stream_and_logs_a_line(
    start_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.script(SCOUT, Raw((CONTENT, _event({"error": "boom"}))))
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    monkeypatch.setattr(logging.getLogger("openrouter_proxy"), "propagate", True)
    with start_proxy() as proxy:
        response = chat(proxy.url, SCOUT, stream=True)
    assert response.status_code == 200
    assert response.content.endswith(b"data: [DONE]\n\n")
    events = [e for e in response.content.split(b"\n\n") if e]
    assert sum(b'"error"' in e for e in events) == 1
    lines = [r for r in caplog.records if r.name == "openrouter_proxy.request"]
    assert len(lines) == 1 and "boom" in lines[0].getMessage()


@pytest.mark.parametrize("stream", [False, True])
def test_a_non_ascii_generation_id_is_dropped_not_the_answer(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, stream: bool
) -> None:
    odd = ((b"x-generation-id", "gen-\u00e9\u65e5".encode()),)
    if stream:
        fake.script(SCOUT, Raw((CONTENT, b"data: [DONE]\n\n"), headers=odd))
    else:
        fake.script(SCOUT, Raw((ANSWER,), content_type="application/json", headers=odd))
    with start_proxy() as proxy:
        response = chat(proxy.url, SCOUT, stream=stream)
    assert response.status_code == 200, response.text
    assert b"Hel" in response.content or b'"hi"' in response.content
    assert "x-generation-id" not in response.headers


def test_line_breaks_in_relayed_rate_limit_headers_are_dropped(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    echoed = {"headers": {"Retry-After": "1\r\nX-Evil: yes", "X-RateLimit-Limit": "20"}}
    fake.script(SCOUT, error_200(400, "Provider said no", echoed))
    with start_proxy() as proxy:
        response = chat(proxy.url, SCOUT)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "Provider said no"
    assert "x-evil" not in response.headers and "retry-after" not in response.headers
    assert response.headers["x-ratelimit-limit"] == "20"


@pytest.mark.parametrize("model", ["acme/m\u00f6del-\u65e5", "acme/line\nbreak"])
def test_a_model_id_that_is_no_header_value_keeps_its_answer(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, model: str
) -> None:
    fake.set_default(model, Reply())
    with start_proxy() as proxy:
        for stream in (False, True):
            response = chat(proxy.url, model, stream=stream)
            assert response.status_code == 200, response.text
            shown = response.headers["x-proxy-model"]
            assert shown.isascii() and shown.isprintable()
            assert httpx.URL(f"/{shown}").path.endswith(model.split("/")[1])
