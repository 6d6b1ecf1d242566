"""The upstream key never comes back (DESIGN §5): upstream text that echoes the
`Authorization` header reaches no response, header or log line with the key in it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest

from app.redaction import REDACTED, Redactor
from app.request_log import configure_logging
from tests.conftest import ProxyFactory
from tests.fake_openrouter import (
    DEEPSEEK,
    DEFAULT_CONTENT,
    FAKE_KEY,
    QWEN,
    R1,
    SCOUT,
    FakeOpenRouter,
    FinishError200,
    HttpError,
    Raw,
    Reply,
    error_200,
)

ECHO = f"upstream saw headers {{'Authorization': 'Bearer {FAKE_KEY}'}}"
ADMIN_KEY = "sk-proxy-admin-secret-0123"
HELLO = [{"role": "user", "content": "hi"}]
# A stream's later chunk arrives this long after its first content: past the read that
# commits the stream, so only the relay's own redaction can catch what it carries.
LATER = 0.3
STREAMED = {
    "/v1/chat/completions": {"messages": HELLO},
    "/v1/messages": {"messages": HELLO, "max_tokens": 64},
    "/v1/responses": {"input": "hi"},
}


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The proxy's log lines, text format at debug level, written to a buffer."""
    logger = logging.getLogger("openrouter_proxy")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    configure_logging("debug", "text")
    buffer = io.StringIO()
    handler = logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    logger.handlers[:], logger.level, logger.propagate = saved


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _event({"id": "gen-1", "object": "chat.completion.chunk", "choices": [choice]})


def test_unit_redacts_every_string_and_keeps_the_rest() -> None:
    redactor = Redactor([FAKE_KEY, None, "short"])
    redactor.add(ADMIN_KEY)
    value = {"raw": [ECHO, 3, {"k": f"x{ADMIN_KEY}y"}], FAKE_KEY: None}
    assert redactor.value(value) == {
        "raw": [ECHO.replace(FAKE_KEY, REDACTED), 3, {"k": f"x{REDACTED}y"}],
        REDACTED: None,
    }
    assert redactor.text("short and clean") == "short and clean"  # too short to be a secret
    assert redactor.bytes(ECHO.encode()) == ECHO.replace(FAKE_KEY, REDACTED).encode()


def test_echoed_keys_reach_no_response_header_or_log_line(
    start_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    captured_logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    rejected = HttpError(
        400,
        {"error": {"code": 400, "message": ECHO, "metadata": {"raw": ECHO, "x": {"y": [ECHO]}}}},
        headers={"retry-after": "1"},
    )
    html_page = Raw((f"<html>{ECHO}</html>".encode(),), status=502, content_type="text/html")
    in_band = error_200(400, ECHO, {"raw": ECHO, "provider_name": ECHO})
    mid_stream = Raw(
        (
            _chunk({"role": "assistant", "content": "Hel"}),
            _event({"error": {"code": 502, "message": ECHO, "metadata": {"raw": ECHO}}}),
            _chunk({}, "error"),
            b"data: [DONE]\n\n",
        )
    )
    # One model per scenario: a failure cools its model.
    scenarios = [(SCOUT, rejected, False), (QWEN, html_page, False)]
    scenarios += [(DEEPSEEK, in_band, True), (R1, mid_stream, True)]
    seen: list[bytes] = []
    with start_proxy(admin_key=ADMIN_KEY) as proxy, httpx.Client(base_url=proxy.url) as http:
        for model, behaviour, stream in scenarios:
            fake.set_default(model, behaviour)
            body = {"model": model, "messages": HELLO, "stream": stream}
            response = http.post("/v1/chat/completions", json=body)
            seen.append(response.content)
            seen.extend(f"{k}: {v}".encode() for k, v in response.headers.items())
    logged = captured_logs.getvalue() + capfd.readouterr().err
    assert logged.count(" openrouter_proxy.request: ") == 4
    everything = b"\n".join([*seen, logged.encode()])
    assert len(fake.chat_requests()) >= 4  # every scenario was served
    where = everything.find(FAKE_KEY.encode())
    assert where < 0, everything[max(0, where - 3000) : where + 3000].decode()
    assert REDACTED.encode() in everything  # the text arrived, minus the key
    assert b"<html>" in everything  # the non-JSON excerpt too


@pytest.mark.parametrize("route", STREAMED)
@pytest.mark.parametrize("where", ["later chunk", "later error event"])
def test_a_key_in_a_delayed_stream_event_is_redacted(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, route: str, where: str
) -> None:
    """The opener redacts the read that commits a stream; whatever arrives after it (a
    content chunk, a mid-stream error event) is redacted by the relay, on every API."""
    tail = f" {ECHO}"
    if where == "later chunk":  # the first piece is padding alone, the key all in the second
        fake.script(SCOUT, Reply(content="x" * len(tail) + tail, chunks=2, chunk_delay=LATER))
    else:
        error = {"code": 502, "message": ECHO, "metadata": {"raw": ECHO}}
        fake.script(SCOUT, FinishError200(after_chunks=1, error=error, delay=LATER))
    with start_proxy() as proxy, httpx.Client(base_url=proxy.url, timeout=10) as http:
        body = {"model": SCOUT, "stream": True, **STREAMED[route]}
        with http.stream("POST", route, json=body) as response:
            assert response.status_code == 200
            relayed = b"".join(response.iter_raw())

    assert FAKE_KEY.encode() not in relayed, relayed.decode()
    assert f"Bearer {REDACTED}".encode() in relayed  # the event arrived, minus the key


def test_only_keys_that_authenticated_are_redacted(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    """A key holder who sends any string as its other key header must not make the proxy
    redact that string from every stream (issue 23): only the secret that matched a stored
    key joins the redactor, so streams stay intact while echoed keys are still hidden."""
    with start_proxy(admin_key=ADMIN_KEY) as proxy, httpx.Client(base_url=proxy.url) as http:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        secret = http.post("/admin/keys", json={"name": "alice"}, headers=admin).json()["key"]
        body = {"model": SCOUT, "messages": HELLO, "stream": True}
        poisoned = [
            {"x-api-key": secret, "Authorization": 'Bearer "content":'},
            {"Authorization": f"Bearer {secret}", "x-api-key": '"assistant"'},
        ]
        for headers in poisoned:
            with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status_code == 200
                r.read()
        with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=secret, max_retries=0) as sdk:
            stream = sdk.chat.completions.create(model=SCOUT, messages=HELLO, stream=True)  # type: ignore[arg-type]
            chunks = list(stream)
        fake.set_default(DEEPSEEK, HttpError(400, {"error": {"code": 400, "message": secret}}))
        echoed = http.post(
            "/v1/chat/completions", json={**body, "model": DEEPSEEK}, headers={"x-api-key": secret}
        )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        DEFAULT_CONTENT
    )
    assert echoed.status_code == 400
    assert secret not in echoed.text and REDACTED in echoed.text  # the real key still is
