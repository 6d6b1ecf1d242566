"""Malformed upstream data is an upstream failure, never a 500 (DESIGN §5): odd catalogue
entries are skipped, odd first events are broken attempts, an odd mid-stream error still
ends the stream cleanly, and odd header values are dropped without losing the answer."""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import ProxyFactory
from tests.fake_openrouter import (
    DEEPSEEK,
    DEFAULT_CONTENT,
    QWEN,
    SCOUT,
    FakeOpenRouter,
    Raw,
    Reply,
    error_200,
)
from tests.live_server import LiveServer

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


# --- malformed stream events on every streaming route (DESIGN §5) -------------------------------
# Before the first content such an event makes a broken attempt: the next candidate answers,
# else the route's own 502. After it, the stream ends with one error event in the route's
# format and its proper end, the malformed event is not relayed, and the request logs one
# line, no traceback.


def _named(kind: str, obj: object) -> bytes:
    """An event as Anthropic frames it: `event:` name, then the data."""
    return f"event: {kind}\ndata: {json.dumps(obj)}\n\n".encode()


_RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": SCOUT, "output": []}
_AT = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
R_CREATED = _event({"type": "response.created", "response": {**_RESPONSE, "status": "in_progress"}})
R_ITEM = _event(
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []},
    }
)
R_HEL = _event({"type": "response.output_text.delta", **_AT, "delta": "Hel"})
R_COMPLETED = _event(
    {"type": "response.completed", "response": {**_RESPONSE, "status": "completed"}}
)
_MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": SCOUT,
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 0, "output_tokens": 0},
}
M_START = _named("message_start", {"type": "message_start", "message": _MESSAGE})
M_BLOCK = _named(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
M_HEL = _named(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
)
M_STOP = _named("message_stop", {"type": "message_stop"})
NOT_JSON = b"data: {not json\n\n"

BROKEN_RESPONSES_PREAMBLES = {
    "unparsable response.created": (b"event: response.created\n" + NOT_JSON, R_HEL),
    "delta of 5": (
        R_CREATED,
        _event({"type": "response.output_text.delta", **_AT, "delta": 5}),
    ),
}
BROKEN_MESSAGES_PREAMBLES = {
    "message of 5": (_named("message_start", {"type": "message_start", "message": 5}), M_HEL),
    "delta of oops": (
        M_START,
        M_BLOCK,
        _named("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "oops"}),
    ),
}


def _openai(proxy: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)


def _anthropic(proxy: LiveServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)


@pytest.mark.parametrize(
    "preamble", BROKEN_RESPONSES_PREAMBLES.values(), ids=list(BROKEN_RESPONSES_PREAMBLES)
)
def test_a_malformed_responses_event_before_content_is_a_broken_attempt(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, preamble: tuple[bytes, ...]
) -> None:
    broken = Raw((*preamble, R_COMPLETED, b"data: [DONE]\n\n"))
    fake.script(SCOUT, broken)
    fake.script(DEEPSEEK, broken, broken)  # a lone candidate is tried twice (DESIGN §6)
    with start_proxy() as proxy, _openai(proxy) as client:
        stream = client.responses.create(
            model=SCOUT, input="hi", stream=True, extra_body={"models": [QWEN]}
        )
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        with pytest.raises(openai.InternalServerError) as alone:
            client.responses.create(model=DEEPSEEK, input="hi", stream=True)

    assert stream.response.headers["x-proxy-model"] == QWEN
    assert text == DEFAULT_CONTENT
    assert alone.value.status_code == 502
    error = alone.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "malformed" in error["message"]


@pytest.mark.parametrize(
    "preamble", BROKEN_MESSAGES_PREAMBLES.values(), ids=list(BROKEN_MESSAGES_PREAMBLES)
)
def test_a_malformed_messages_event_before_content_is_a_broken_attempt(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, preamble: tuple[bytes, ...]
) -> None:
    broken = Raw((*preamble, M_STOP))
    fake.script(SCOUT, broken)
    fake.script(DEEPSEEK, broken, broken)
    hello: Any = HELLO
    with start_proxy() as proxy, _anthropic(proxy) as client:
        with client.messages.stream(
            model=SCOUT, max_tokens=8, messages=hello, extra_body={"models": [QWEN]}
        ) as stream:
            text = "".join(stream.text_stream)
            served = stream.response.headers["x-proxy-model"]
        with pytest.raises(anthropic.InternalServerError) as alone:
            client.messages.create(model=DEEPSEEK, max_tokens=8, messages=hello, stream=True)

    assert served == QWEN and text == DEFAULT_CONTENT
    assert alone.value.status_code == 502
    body = alone.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "malformed" in body["error"]["message"]


SDK_HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
FINISH = _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = _event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})


def _see_every_log_line(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the proxy's request lines and uvicorn's (where an ASGI traceback would go) to
    caplog; call it once the proxy's server is built, as uvicorn configures its loggers then."""
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    for name in ("openrouter_proxy", "uvicorn"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


def _raw_stream(url: str, path: str, body: dict[str, Any], request_id: str) -> list[bytes]:
    """The events of a stream as the client receives them, without their blank lines."""
    with httpx.stream(
        "POST", f"{url}{path}", json=body, headers={"X-Request-Id": request_id}, timeout=10
    ) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_raw())
    return [event for event in raw.split(b"\n\n") if event]


def _check_one_line_no_traceback(caplog: pytest.LogCaptureFixture, request_id: str) -> None:
    """Read once the proxy has stopped: every line its requests wrote has been written."""
    lines = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "openrouter_proxy.request" and r.fields.get("id") == request_id  # type: ignore[attr-defined]
    ]
    assert len(lines) == 1, lines
    assert lines[0]["status"] == 200 and "malformed" in lines[0]["error"]
    assert [
        r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR
    ] == []


@pytest.mark.parametrize(
    "bad", [_event({"choices": 5}), NOT_JSON], ids=["choices of 5", "not json"]
)
def test_a_malformed_chat_event_after_content_ends_with_one_error_and_done(
    start_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    bad: bytes,
) -> None:
    cut = Raw((CONTENT, bad, FINISH, USAGE, b"data: [DONE]\n\n"))
    fake.script(SCOUT, cut, cut)
    body = {"model": SCOUT, "messages": HELLO, "stream": True}
    with start_proxy() as proxy:
        _see_every_log_line(caplog, monkeypatch)
        events = _raw_stream(proxy.url, "/v1/chat/completions", body, "malformed-chat")
        with _openai(proxy) as client:
            stream = client.chat.completions.create(model=SCOUT, messages=SDK_HELLO, stream=True)
            seen: list[str | None] = []
            with pytest.raises(openai.APIError) as raised:
                seen.extend(chunk.choices[0].delta.content for chunk in stream)

    assert events[0] + b"\n\n" == CONTENT and seen == ["Hel"]
    assert bad.strip() not in events and FINISH.strip() not in events
    (error,) = [e for e in events if b'"error"' in e]
    assert events[-2:] == [error, b"data: [DONE]"]
    assert "malformed" in raised.value.message
    _check_one_line_no_traceback(caplog, "malformed-chat")


@pytest.mark.parametrize(
    "bad",
    [_event({"type": "response.output_text.delta", **_AT, "delta": 5}), NOT_JSON],
    ids=["delta of 5", "not json"],
)
def test_a_malformed_responses_event_after_content_ends_with_response_failed(
    start_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    bad: bytes,
) -> None:
    cut = Raw((R_CREATED, R_ITEM, R_HEL, bad, R_COMPLETED, b"data: [DONE]\n\n"))
    fake.script(SCOUT, cut, cut)
    body = {"model": SCOUT, "input": "hi", "stream": True}
    with start_proxy() as proxy:
        _see_every_log_line(caplog, monkeypatch)
        events = _raw_stream(proxy.url, "/v1/responses", body, "malformed-responses")
        with _openai(proxy) as client:
            stream = client.responses.create(model=SCOUT, input="hi", stream=True)
            seen: list[str] = []
            with pytest.raises(openai.APIError) as raised:
                seen.extend(e.type for e in stream)

    assert events[:3] == [R_CREATED.strip(), R_ITEM.strip(), R_HEL.strip()]
    # Codex follows `response.failed`; openai-python raises on the `error` event after it.
    assert seen == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.failed",
    ]
    assert bad.strip() not in events and R_COMPLETED.strip() not in events
    (failed,) = [e for e in events if b'"response.failed"' in e]
    (error,) = [e for e in events if b'"type": "error"' in e or b'"type":"error"' in e]
    assert events[3:] == [failed, error, b"data: [DONE]"]
    assert "malformed" in raised.value.message
    _check_one_line_no_traceback(caplog, "malformed-responses")


@pytest.mark.parametrize(
    "bad",
    [
        _named("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "oops"}),
        b"event: content_block_delta\n" + NOT_JSON,
    ],
    ids=["delta of oops", "not json"],
)
def test_a_malformed_messages_event_after_content_ends_with_an_error_event(
    start_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    bad: bytes,
) -> None:
    cut = Raw((M_START, M_BLOCK, M_HEL, bad, M_STOP, b"event: data\ndata: [DONE]\n\n"))
    fake.script(SCOUT, cut, cut)
    hello: Any = HELLO
    body = {"model": SCOUT, "max_tokens": 8, "messages": HELLO, "stream": True}
    with start_proxy() as proxy:
        _see_every_log_line(caplog, monkeypatch)
        events = _raw_stream(proxy.url, "/v1/messages", body, "malformed-messages")
        with _anthropic(proxy) as client:
            stream = client.messages.create(model=SCOUT, max_tokens=8, messages=hello, stream=True)
            seen: list[str] = []
            with pytest.raises(anthropic.APIStatusError) as raised:
                seen.extend(e.type for e in stream)

    assert events[:3] == [M_START.strip(), M_BLOCK.strip(), M_HEL.strip()]
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    (error,) = [e for e in events if e.startswith(b"event: error")]
    assert events[3:] == [error]  # Anthropic's stream ends at its error event
    assert json.loads(error.split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    assert "malformed" in str(raised.value)
    _check_one_line_no_traceback(caplog, "malformed-messages")
