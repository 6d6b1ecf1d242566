"""Bad input and upstream trouble end in the documented status and an OpenAI-shaped body."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from openai import APIStatusError, OpenAI

from app.main import create_app
from tests.conftest import ProxyFactory, make_settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Stall
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == error_type and error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"model": "m/x"}', "messages", "Missing required field 'messages'"),
        (b'{"messages": []}', "messages", "non-empty array"),
        (b'{"messages": "hi"}', "messages", "non-empty array"),
        (b'{"messages": [{"content": "x"}]}', "messages[0].role", "role"),
        (b'{"messages": [{"role": "user"}], "stream": "yes"}', "stream", "boolean"),
        (b'{"messages": [{"role": "user"}], "temperature": "hot"}', "temperature", "number"),
        (b'{"messages": [{"role": "user"}], "max_tokens": 1.5}', "max_tokens", "integer"),
        (b'{"messages": [{"role": "user"}], "model": 7}', "model", "string"),
        (b'{"messages": [{"role": "user"}], "models": "a/b"}', "models", "array"),
    ],
)
def test_bad_requests_get_400_and_reach_no_upstream(
    proxy: LiveServer, fake: FakeOpenRouter, body: bytes, param: str | None, words: str
):
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == param
    assert words in error["message"]
    assert fake.chat_requests() == []


def test_body_over_the_limit_gets_413_declared_or_streamed(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}'
    with start_proxy(max_body_mb=0.1) as proxy:
        declared = httpx.post(f"{proxy.url}/v1/chat/completions", content=big)
        chunked = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=(big[i : i + 65536] for i in range(0, len(big), 65536)),
        )
    for response in (declared, chunked):
        error = assert_openai_error(response, 413, "invalid_request_error")
        assert "PROXY_MAX_BODY_MB" in error["message"]
    assert fake.chat_requests() == []


def test_unknown_route_and_wrong_method_are_json(proxy: LiveServer):
    assert_openai_error(httpx.get(f"{proxy.url}/v1/nothing"), 404, "not_found_error")
    assert_openai_error(httpx.get(f"{proxy.url}/v1/chat/completions"), 405, "invalid_request_error")


def test_missing_upstream_key_gets_503_and_readyz_says_why(fake_server: LiveServer):
    settings = make_settings(fake_server.url, openrouter_api_key=None)
    with LiveServer(create_app(settings)) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0) as sdk:
            with pytest.raises(APIStatusError) as raised:
                sdk.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]
        ready = httpx.get(f"{proxy.url}/readyz")
    assert raised.value.status_code == 503
    assert "OPENROUTER_API_KEY" in raised.value.message
    assert ready.status_code == 503
    assert ready.json()["checks"]["upstream_key"]["ok"] is False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_upstream_gets_502():
    settings = make_settings(f"http://127.0.0.1:{_closed_port()}")
    with LiveServer(create_app(settings)) as proxy:
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions", json={"model": SCOUT, "messages": HELLO}
        )
        ready = httpx.get(f"{proxy.url}/readyz")
    error = assert_openai_error(response, 502, "upstream_error")
    assert "cannot reach OpenRouter" in error["message"]
    assert ready.status_code == 503 and ready.json()["checks"]["catalogue"]["ok"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_keepalives_do_not_extend_the_first_byte_deadline(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, stream: bool
):
    fake.set_default(SCOUT, Stall(seconds=3.0))  # whitespace / comments every 50 ms, then …
    with start_proxy(first_byte_timeout=0.5) as proxy:
        started = time.monotonic()
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO, "stream": stream},
            timeout=10,
        )
        elapsed = time.monotonic() - started
    error = assert_openai_error(response, 504, "timeout")
    assert error["code"] == "upstream_timeout"
    assert elapsed < 2.5  # the stall's content at 3 s never arrived


def test_total_deadline_cuts_a_stalled_stream_with_one_error_event(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Stall(seconds=3.0, after_chunks=1))
    with start_proxy(total_timeout=0.8) as proxy:
        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO, "stream": True},
            timeout=10,
        ) as response:
            body = b"".join(response.iter_raw())
    assert response.status_code == 200
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert b'"error"' in events[-2] and b"PROXY_TOTAL_TIMEOUT" in events[-2]
    assert sum(b'"error"' in e for e in events) == 1
