"""Fallback a client can trust (issue 15, DESIGN §5–§6): server errors, stalls, rate limits
and clients that leave, against the real proxy and the fake OpenRouter, seen through the
openai SDK where the client's view matters."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from app.main import create_app
from tests.conftest import CLIENT_KEY, make_settings
from tests.fake_openrouter import (
    GEMMA,
    MISTRAL,
    QWEN,
    SCOUT,
    FakeOpenRouter,
    HttpError,
    Reply,
    Stall,
    bad_request_400,
    free_per_day,
    free_per_min,
    provider_429,
)
from tests.live_server import LiveServer
from tests.polling import wait_until

HELLO = [{"role": "user", "content": "Say hello"}]
PAIR = {"pair": [SCOUT, MISTRAL]}


@contextmanager
def proxy_for(
    fake_server: LiveServer, clock: Callable[[], float] | None = None, **overrides: Any
) -> Iterator[LiveServer]:
    settings = make_settings(fake_server.url, **overrides)
    with LiveServer(create_app(settings, clock=clock)) as server:
        yield server


def post(proxy: LiveServer, timeout: float = 20, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"messages": HELLO, **body}, timeout=timeout
    )


def stream_body(proxy: LiveServer, **body: Any) -> tuple[httpx.Response, list[bytes]]:
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        json={"messages": HELLO, "stream": True, **body},
        timeout=20,
    ) as response:
        raw = b"".join(response.iter_raw())
    return response, [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def server_error(status: int = 500) -> HttpError:
    return HttpError(status, {"error": {"code": status, "message": "Internal Server Error"}})


def rate_limited(retry_after: str) -> HttpError:
    failure = provider_429(SCOUT)
    return HttpError(429, failure.body, {"Retry-After": retry_after})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "openrouter_proxy.request" and isinstance(getattr(r, "fields", None), dict)
    ]


# --- a server error is not a rate limit ---------------------------------------------------------


def test_one_500_on_a_lone_model_is_answered_quickly_with_the_sdks_default_retries(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, server_error(500))

    with proxy_for(fake_server) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY) as client:  # retries on
            started = time.monotonic()
            completion = client.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]
            elapsed = time.monotonic() - started

    assert completion.choices[0].message.content
    assert elapsed < 2.0
    assert fake.attempts == [SCOUT, SCOUT]  # the proxy tried again itself, once


def test_a_lone_model_failing_twice_relays_its_error_not_a_429(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.set_default(SCOUT, server_error(503))

    with proxy_for(fake_server) as proxy:
        first = post(proxy, model=SCOUT)
        second = post(proxy, model=SCOUT)  # the model is failing: tried again, not refused

    assert first.status_code == second.status_code == 502
    assert "retry-after" not in first.headers
    assert fake.attempts == [SCOUT] * 4


def test_a_failing_model_goes_behind_the_others_and_is_back_after_15_s(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    offset = [0.0]
    fake.script(SCOUT, server_error(502))

    with proxy_for(fake_server, clock=lambda: time.time() + offset[0], chains=PAIR) as proxy:
        served_first = post(proxy, model="pair").headers["X-Proxy-Model"]
        served_while_failing = post(proxy, model="pair").headers["X-Proxy-Model"]
        offset[0] = 16.0  # the primary recovered; its failing mark has run out
        served_after = post(proxy, model="pair").headers["X-Proxy-Model"]

    assert served_first == MISTRAL
    assert served_while_failing == MISTRAL
    assert served_after == SCOUT
    assert fake.attempts == [SCOUT, MISTRAL, MISTRAL, SCOUT]


# --- OpenRouter unreachable is not a model failing -----------------------------------------------


def test_refused_upstream_is_502_each_time_and_the_request_after_recovery_succeeds(
    fake: FakeOpenRouter,
):
    port = free_port()
    settings = make_settings(f"http://127.0.0.1:{port}", chains=PAIR)
    with LiveServer(create_app(settings)) as proxy:
        refused = [post(proxy, model="pair") for _ in range(2)]
        upstream = LiveServer(fake.app)
        upstream.server.config.port = port  # OpenRouter comes back, at the same address
        with upstream:
            recovered = post(proxy, model="pair")

    for response in refused:
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_unreachable"
        assert response.headers["X-Proxy-Attempts"] == "1"  # the walk stopped at once
    assert recovered.status_code == 200, recovered.text
    assert recovered.headers["X-Proxy-Model"] == SCOUT  # nothing was cooled


# --- wait for the model just tried ----------------------------------------------------------------


def test_free_tier_reset_in_1_5_s_is_waited_for(fake: FakeOpenRouter, fake_server: LiveServer):
    reset_ms = int((time.time() + 1.5) * 1000)
    fake.script(SCOUT, free_per_min(reset_ms), Reply(content="after the reset"))

    with proxy_for(fake_server, max_wait=5) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            started = time.monotonic()
            raw = client.chat.completions.with_raw_response.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]
            elapsed = time.monotonic() - started

    assert raw.parse().choices[0].message.content == "after the reset"
    assert raw.headers["X-Proxy-Attempts"] == "2"
    assert 1.0 <= elapsed < 4.0


def test_a_model_is_tried_at_most_three_times_per_request(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.set_default(SCOUT, rate_limited("1"))

    with proxy_for(fake_server, max_wait=10) as proxy:
        response = post(proxy, model=SCOUT)

    assert response.status_code == 429
    assert fake.attempts == [SCOUT] * 3


# --- context length ----------------------------------------------------------------------------

TOO_LONG = bad_request_400(
    "This endpoint's maximum context length is 8192 tokens. However, you requested about "
    "9000 tokens. Please reduce the length of the messages."
)


def test_context_length_400_moves_on_only_to_a_longer_context(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(GEMMA, TOO_LONG)  # 8k context
    chains = {"long": [GEMMA, MISTRAL, QWEN], "short": [QWEN, GEMMA]}
    fake.script(QWEN, TOO_LONG)  # 262k context: nothing longer after it

    with proxy_for(fake_server, chains=chains, max_wait=0) as proxy:
        longer = post(proxy, model="long")
        none_longer = post(proxy, model="short")

    assert longer.status_code == 200
    assert longer.headers["X-Proxy-Model"] == MISTRAL  # 96k > 8k
    assert none_longer.status_code == 400
    assert none_longer.json()["error"]["message"] == TOO_LONG.body["error"]["message"]
    assert none_longer.headers["X-Proxy-Attempts"] == "1"
    assert fake.attempts == [GEMMA, MISTRAL, QWEN]


# --- bounded work per request -------------------------------------------------------------------


def test_a_2000_entry_models_array_makes_at_most_max_attempts_calls(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    models = [f"acme/model-{i}" for i in range(2000)]  # each "not a valid model ID"

    with proxy_for(fake_server, max_wait=0) as proxy:
        response = post(proxy, model=models[0], models=models)

    assert response.status_code == 400
    assert len(fake.attempts) == 10  # PROXY_MAX_ATTEMPTS' default
    assert response.headers["X-Proxy-Attempts"] == "10"


# --- exactly one of each header -----------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(free_per_day(int(time.time() + 3600) * 1000), id="free-per-day"),
        pytest.param(rate_limited("1000000000000"), id="absurd-retry-after"),
    ],
)
def test_a_relayed_429_carries_each_header_once(
    fake: FakeOpenRouter, fake_server: LiveServer, failure: HttpError
):
    fake.script(SCOUT, failure)

    with proxy_for(fake_server, max_wait=0) as proxy:
        relayed = post(proxy, model=SCOUT)
        refused = post(proxy, model=SCOUT)  # cooling: the proxy's own 429

    for response in (relayed, refused):
        assert response.status_code == 429
        names = [name.lower() for name, _ in response.headers.multi_items()]
        assert len(names) == len(set(names)), names
        assert int(response.headers["retry-after"]) <= 86_400
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        if any(k.lower() == name for k in failure.headers):
            assert relayed.headers[name] == failure.headers[_spelled(failure, name)]


def _spelled(failure: HttpError, name: str) -> str:
    return next(k for k in failure.headers if k.lower() == name)


# --- streams end cleanly ------------------------------------------------------------------------


def test_a_stream_without_done_after_stop_raises_nothing_in_the_sdk(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Reply(content="complete answer", done=False))

    with proxy_for(fake_server) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            stream = client.chat.completions.create(model=SCOUT, messages=HELLO, stream=True)  # type: ignore[arg-type]
            text = "".join(c.choices[0].delta.content or "" for c in stream)
        fake.script(SCOUT, Reply(content="complete answer", done=False))
        response, events = stream_body(proxy, model=SCOUT)

    assert text == "complete answer"
    assert events[-1] == b"data: [DONE]"
    assert not any(b'"error"' in e for e in events)


def test_a_stall_after_content_ends_at_the_idle_timeout(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Stall(seconds=5.0, after_chunks=1))  # keep-alive comments meanwhile

    with proxy_for(fake_server, stream_idle_timeout=0.5) as proxy:
        started = time.monotonic()
        response, events = stream_body(proxy, model=SCOUT)
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < 2.0
    assert events[-1] == b"data: [DONE]"
    errors = [e for e in events if b'"error"' in e]
    assert errors == [events[-2]]
    assert b"PROXY_STREAM_IDLE_TIMEOUT" in errors[0]


def test_a_stream_without_content_moves_on_at_the_first_token_timeout(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Stall(seconds=5.0))
    fake.script(MISTRAL, Stall(seconds=1.0))  # the last candidate: first-byte timeout applies
    settings = {"chains": PAIR, "stream_first_token_timeout": 0.5, "first_byte_timeout": 10}

    with proxy_for(fake_server, **settings) as proxy:
        started = time.monotonic()
        response, events = stream_body(proxy, model="pair")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.headers["X-Proxy-Model"] == MISTRAL
    assert events[-1] == b"data: [DONE]"
    assert elapsed < 3.5


# --- client gone means upstream closed ----------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_before_content_closes_the_upstream_within_a_second(
    fake: FakeOpenRouter,
    fake_server: LiveServer,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
):
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    fake.script(SCOUT, Stall(seconds=10.0))  # keep-alives only, for ten seconds

    with proxy_for(fake_server) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            post(proxy, timeout=0.5, model=SCOUT, stream=stream)
        left_at = time.monotonic()
        assert fake.closed_event.wait(timeout=1.0)
        closed_after = time.monotonic() - left_at
        wait_until(lambda: request_lines(caplog), message="the request line after the close")

    assert closed_after < 1.0
    (sent,) = fake.chat_requests()
    assert fake.closed_early == [sent.request_id]
    assert [line["status"] for line in request_lines(caplog)] == [499]


def test_a_client_leaving_while_waiting_for_a_cooling_model_is_logged_499(
    fake: FakeOpenRouter, fake_server: LiveServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    fake.script(SCOUT, rate_limited("5"))

    with proxy_for(fake_server, max_wait=10) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            post(proxy, timeout=0.7, model=SCOUT)
        wait_until(lambda: request_lines(caplog), message="the request line of the leaver")

    assert fake.attempts == [SCOUT]  # nobody was there to retry for
    assert [line["status"] for line in request_lines(caplog)] == [499]


def test_a_client_leaving_mid_stream_is_logged_499(
    fake: FakeOpenRouter, fake_server: LiveServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    fake.script(SCOUT, Reply(content="x" * 40, chunks=40, chunk_delay=0.1))

    with proxy_for(fake_server) as proxy:
        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO, "stream": True},
        ) as response:
            next(line for line in response.iter_lines() if '"content":"x' in line)
        assert fake.closed_event.wait(timeout=1.0)
        wait_until(lambda: request_lines(caplog), message="the request line after the close")

    assert [line["status"] for line in request_lines(caplog)] == [499]


def test_an_upload_cut_mid_body_is_logged_499(
    fake: FakeOpenRouter, fake_server: LiveServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="openrouter_proxy")
    body = json.dumps({"model": SCOUT, "messages": HELLO}).encode()

    with proxy_for(fake_server) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + body
            )
            time.sleep(0.2)  # part of the scenario: the client stays a moment, then leaves
        wait_until(lambda: request_lines(caplog), message="the request line of the cut upload")

    assert fake.chat_requests() == []
    assert [line["status"] for line in request_lines(caplog)] == [499]


def test_the_sdk_sees_an_error_after_a_mid_stream_idle_stall(
    fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Stall(seconds=5.0, after_chunks=1))

    with proxy_for(fake_server, stream_idle_timeout=0.5) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            stream = client.chat.completions.create(model=SCOUT, messages=HELLO, stream=True)  # type: ignore[arg-type]
            with pytest.raises(openai.APIError) as raised:
                for _ in stream:
                    pass

    assert "PROXY_STREAM_IDLE_TIMEOUT" in raised.value.message
