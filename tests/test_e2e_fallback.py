"""Fallback between models, end to end: the real proxy in front of the real fake OpenRouter,
driven by the openai SDK or httpx (DESIGN §5–§6, openrouter-api.md §4–§5 and Appendix B)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from app.main import create_app
from tests.conftest import CLIENT_KEY, ProxyFactory, make_settings
from tests.fake_openrouter import (
    DEEPSEEK,
    FAKE_KEY,
    GEMMA,
    MISTRAL,
    OPTIMUS,
    QWEN,
    R1,
    SCOUT,
    SCOUT_PAID,
    Behaviour,
    CutOff,
    Drop,
    FakeOpenRouter,
    FinishError200,
    HttpError,
    Reply,
    Stall,
    WhitespaceOnly,
    bad_request_400,
    credits_402,
    edge_524,
    error_200,
    free_per_day,
    invalid_model,
    moderation_403,
    no_endpoints,
    overloaded_529,
    provider_429,
    provider_502,
    timeout_408,
    unavailable_503,
)
from tests.live_server import LiveServer

GPT = "openai/gpt-4o-mini"
HAIKU = "anthropic/claude-3.5-haiku"

FREE_VARIANTS = [SCOUT, MISTRAL, DEEPSEEK, R1, QWEN, GEMMA]
FREE_POOL = [*FREE_VARIANTS, OPTIMUS]
PRICED = {GPT, HAIKU, SCOUT_PAID, "openrouter/auto", "google/gemini-2.5-flash-image-preview"}
HELLO = [{"role": "user", "content": "Say hello"}]
PAIR = {"pair": [SCOUT, MISTRAL]}


@pytest.fixture
def serve_proxy(fake_server: LiveServer) -> ProxyFactory:
    """conftest's `start_proxy`, except that the fake starts shutting down with the proxy:
    the two uvicorn shutdowns overlap, which keeps this file's ~40 servers quick. Use it
    only when nothing needs the fake once the proxy is gone."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[LiveServer]:
        with LiveServer(create_app(make_settings(fake_server.url, **overrides))) as server:
            try:
                yield server
            finally:
                fake_server.server.should_exit = True

    return start


@contextmanager
def sdk(proxy: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        yield client


def post(proxy: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"messages": HELLO, **body}, timeout=20
    )


def sse_events(body: bytes) -> list[bytes]:
    return [event for event in body.replace(b"\r\n", b"\n").split(b"\n\n") if event.strip()]


def error(status: int, message: str) -> HttpError:
    return HttpError(status, {"error": {"code": status, "message": message}, "user_id": "u"})


# --- 1. a provider 429 is answered by the next model ------------------------------------------


@pytest.mark.parametrize("via", ["chain", "models"])
def test_provider_429_is_answered_by_the_next_model(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, via: str
):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, Reply(content="from B"))
    if via == "chain":
        request: dict[str, Any] = {"model": "pair"}
        settings: dict[str, Any] = {"chains": PAIR}
    else:
        request, settings = {"model": SCOUT, "extra_body": {"models": [MISTRAL]}}, {}

    with serve_proxy(max_wait=0, **settings) as proxy, sdk(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(messages=HELLO, **request)  # type: ignore[arg-type]

    completion = raw.parse()
    assert completion.choices[0].message.content == "from B"
    assert completion.model == MISTRAL
    assert raw.headers["X-Proxy-Model"] == MISTRAL
    assert raw.headers["X-Proxy-Attempts"] == "2"
    assert fake.attempts == [SCOUT, MISTRAL]


# --- 2. 5xx, timeouts, "no endpoints" and broken 200s fail over -------------------------------


@pytest.mark.parametrize(
    ("failure", "settings"),
    [
        pytest.param(timeout_408(), {}, id="408"),
        pytest.param(error(500, "Internal Server Error"), {}, id="500"),
        pytest.param(provider_502(), {}, id="502"),
        pytest.param(unavailable_503(30), {}, id="503"),
        pytest.param(edge_524(), {}, id="524"),
        pytest.param(overloaded_529(), {}, id="529"),
        pytest.param(no_endpoints(SCOUT), {}, id="404-no-endpoints"),
        pytest.param(invalid_model(SCOUT), {}, id="400-not-a-valid-model-id"),
        pytest.param(Stall(seconds=3.0), {"first_byte_timeout": 0.5}, id="first-byte-timeout"),
        pytest.param(
            error_200(502, "Provider returned error", {"raw": "boom", "provider_name": "X"}),
            {},
            id="200-with-error-body",
        ),
        pytest.param(WhitespaceOnly(), {}, id="200-whitespace-only"),
        pytest.param(CutOff(), {}, id="200-cut-off-json"),
    ],
)
def test_retryable_failures_fail_over_to_the_next_model(
    serve_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    failure: Behaviour,
    settings: dict[str, Any],
):
    fake.script(SCOUT, failure)
    fake.script(MISTRAL, Reply(content="from B"))

    with serve_proxy(chains=PAIR, max_wait=0, **settings) as proxy:
        started = time.monotonic()
        response = post(proxy, model="pair")
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "from B"
    assert response.headers["X-Proxy-Model"] == MISTRAL
    assert response.headers["X-Proxy-Attempts"] == "2"
    assert fake.attempts == [SCOUT, MISTRAL]
    assert elapsed < 2.5  # a stalled first model is abandoned at the first-byte deadline


# --- 3. errors that the same input would meet everywhere are relayed, not retried -------------


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        pytest.param(
            bad_request_400("Invalid value for 'temperature': must be between 0 and 2"),
            400,
            id="400-bad-request",
        ),
        pytest.param(moderation_403(SCOUT), 403, id="403-moderation"),
        pytest.param(error(413, "Payload Too Large"), 413, id="413"),
        pytest.param(error(422, "Unprocessable Entity: tool schema is invalid"), 422, id="422"),
    ],
)
def test_input_errors_are_relayed_without_fallback(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, failure: HttpError, status: int
):
    fake.script(SCOUT, failure, failure)  # once for httpx, once for the SDK

    with serve_proxy(chains=PAIR, max_wait=0) as proxy:
        response = post(proxy, model="pair")
        with sdk(proxy) as client, pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="pair", messages=HELLO)  # type: ignore[arg-type]

    upstream = failure.body["error"]
    assert response.status_code == status
    relayed = response.json()["error"]
    assert relayed["message"] == upstream["message"]
    assert relayed.get("metadata") == upstream.get("metadata")  # moderation reasons survive
    assert response.headers["X-Proxy-Attempts"] == "1"
    assert raised.value.status_code == status
    assert upstream["message"] in raised.value.message
    assert fake.attempts == [SCOUT, SCOUT]  # one upstream call per request; B never asked


def test_an_invalid_model_id_alone_gets_openrouters_400_every_time(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with serve_proxy(max_wait=0) as proxy:
        responses = [post(proxy, model="acme/fake-1.0") for _ in range(2)]

    for response in responses:  # the second is not a 429 "cooling": the id is just wrong
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "acme/fake-1.0 is not a valid model ID"
    assert fake.attempts == ["acme/fake-1.0", "acme/fake-1.0"]


# --- 4. free-models-per-day cools every `:free` model until the reset -------------------------


def test_free_models_per_day_stops_all_free_calls_until_the_reset(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    reset = int(time.time()) + 3 * 3600  # epoch seconds, whole: the wire carries milliseconds
    fake.script(SCOUT, free_per_day(reset * 1000))
    # The stealth model is zero-priced without the `:free` suffix, so the account-wide
    # free-tier limit does not cover it and `free` would rightly be answered by it; take it
    # out of the catalogue so that every candidate of `free` is a `:free` model.
    fake.models = [m for m in fake.models if m["id"] != OPTIMUS]

    with serve_proxy(max_wait=0) as proxy:
        first = post(proxy, model=SCOUT)
        second = post(proxy, model="free")
        checked_at = time.time()

    assert first.status_code == 429
    assert len(fake.chat_requests()) == 1  # `free` made no upstream call at all
    assert second.status_code == 429, second.text
    assert second.headers["X-Proxy-Attempts"] == "0"
    assert abs(int(second.headers["Retry-After"]) - (reset - checked_at)) <= 2
    assert abs(int(first.headers["Retry-After"]) - (reset - checked_at)) <= 2
    error_body = second.json()["error"]
    assert error_body["type"] == "rate_limit_error"
    for model in FREE_VARIANTS:  # the message lists the models …
        assert model in error_body["message"]
    assert time.strftime("%H:%M", time.gmtime(reset)) in error_body["message"]  # … and when


def test_free_models_per_day_moves_on_to_a_paid_model_when_allowed(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, free_per_day((int(time.time()) + 3600) * 1000))
    fake.models = [m for m in fake.models if m["id"] != OPTIMUS]  # as above: not a `:free` id

    with serve_proxy(max_wait=0, allow_paid=True) as proxy:
        response = post(proxy, model="free")

    assert response.status_code == 200, response.text
    assert fake.attempts == [SCOUT, SCOUT_PAID]  # no other `:free` model was tried
    assert response.headers["X-Proxy-Model"] == SCOUT_PAID


# --- 5. a stream whose first model fails before content is served by the next ----------------

_IN_BAND_PROVIDER_429 = error_200(
    429, "Provider returned error", {"raw": "rate-limited upstream", "provider_name": "Venice"}
)


@pytest.mark.parametrize(
    ("failure", "fallback", "settings"),
    [
        pytest.param(provider_502(), MISTRAL, {}, id="http-502"),
        pytest.param(unavailable_503(30), MISTRAL, {}, id="http-503"),
        pytest.param(_IN_BAND_PROVIDER_429, MISTRAL, {}, id="in-band-error-after-keepalive"),
        # Appendix A 7b verbatim: an in-band free-models-per-day; only a non-`:free` model helps.
        pytest.param(error_200(), OPTIMUS, {}, id="in-band-free-per-day"),
        pytest.param(FinishError200(after_chunks=0), MISTRAL, {}, id="role-chunk-then-error-event"),
        pytest.param(Drop(after_chunks=0), MISTRAL, {}, id="role-chunk-then-drop"),
        pytest.param(WhitespaceOnly(), MISTRAL, {}, id="keepalives-only"),
        pytest.param(CutOff(), MISTRAL, {}, id="cut-off-event"),
        pytest.param(
            Stall(seconds=3.0), MISTRAL, {"first_byte_timeout": 0.5}, id="first-byte-timeout"
        ),
    ],
)
def test_stream_failing_before_content_is_served_by_the_next_model(
    serve_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    failure: Behaviour,
    fallback: str,
    settings: dict[str, Any],
):
    fake.script(SCOUT, failure)
    fake.script(fallback, Reply(content="streamed by B", chunks=3, keepalives=2))

    with serve_proxy(chains={"pair": [SCOUT, fallback]}, max_wait=0, **settings) as proxy:
        with sdk(proxy) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="pair",
                messages=HELLO,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(raw.parse())

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "streamed by B"
    assert {c.model for c in chunks} == {fallback}
    assert chunks[-1].usage is not None  # the usage chunk (choices: []) came through
    assert raw.headers["X-Proxy-Model"] == fallback
    assert raw.headers["X-Proxy-Attempts"] == "2"
    assert fake.attempts == [SCOUT, fallback]


def test_stream_whose_candidates_all_fail_before_content_gets_a_real_status(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, provider_502())
    fake.script(MISTRAL, error_200(502, "Provider returned error", {"raw": "down"}))

    with serve_proxy(chains=PAIR, max_wait=0) as proxy, sdk(proxy) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="pair", messages=HELLO, stream=True)  # type: ignore[arg-type]

    # Not a 200 with an error event: the SDK sees a status it can retry on.
    assert raised.value.status_code == 502
    assert raised.value.response.headers["content-type"] == "application/json"
    assert raised.value.response.headers["X-Proxy-Attempts"] == "2"
    assert fake.attempts == [SCOUT, MISTRAL]


# --- 6. after the first content, an upstream failure ends the stream: no second model ---------

MID_STREAM_FAILURES = [
    pytest.param(FinishError200(after_chunks=1, done=True), id="finish-error-then-done"),
    pytest.param(FinishError200(after_chunks=1, done=False), id="finish-error-no-done"),
    pytest.param(Drop(after_chunks=1), id="connection-drop"),
]


@pytest.mark.parametrize("failure", MID_STREAM_FAILURES)
def test_mid_stream_failure_is_an_error_in_the_stream_and_calls_no_second_model(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, failure: Behaviour
):
    # Two requests, each on its own chain, so whatever the first did to cooldowns cannot
    # change where the second goes.
    fake.script(SCOUT, failure)
    fake.script(QWEN, failure)
    received: list[str] = []

    with serve_proxy(chains={"sdk": [SCOUT, MISTRAL], "raw": [QWEN, R1]}, max_wait=0) as proxy:
        with sdk(proxy) as client:
            stream = client.chat.completions.create(model="sdk", messages=HELLO, stream=True)  # type: ignore[arg-type]
            with pytest.raises(openai.APIError):
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.append(chunk.choices[0].delta.content)
        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            json={"model": "raw", "messages": HELLO, "stream": True},
            timeout=10,
        ) as response:
            body = b"".join(response.iter_raw())

    assert received  # the first content chunk had been relayed before the failure
    assert fake.attempts == [SCOUT, QWEN]  # neither stream moved on to a second model
    assert response.status_code == 200
    events = sse_events(body)
    assert events[-1] == b"data: [DONE]"
    assert events.count(b"data: [DONE]") == 1
    errors = [e for e in events if b'"error"' in e]
    assert errors == [events[-2]], events
    (payload,) = [json.loads(line[5:]) for line in events[-2].split(b"\n") if line[:5] == b"data:"]
    assert payload["error"]["message"]
    assert any(b'"content":"' in e and b'"content":""' not in e for e in events[:-2])


# --- 7. a `models` array is walked in order, one model per attempt, and never forwarded -------


def test_five_entry_models_array_is_walked_in_order_and_not_forwarded(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    walk = [GPT, SCOUT, HAIKU, MISTRAL, QWEN]
    fake.script(GPT, provider_502())
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(HAIKU, unavailable_503(30))
    fake.script(MISTRAL, no_endpoints(MISTRAL))
    fake.script(QWEN, Reply(content="fifth"))
    extra = {"temperature": 0.3, "provider": {"sort": "throughput"}}

    with serve_proxy(max_wait=0) as proxy:
        response = post(proxy, model=walk[0], models=walk, **extra)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fifth"
    assert response.headers["X-Proxy-Model"] == QWEN
    assert response.headers["X-Proxy-Attempts"] == "5"
    assert fake.attempts == walk
    sent = [r.json for r in fake.chat_requests()]
    assert [body["model"] for body in sent] == walk  # one model per upstream request
    for body, model in zip(sent, walk, strict=True):
        assert body == {"model": model, "messages": HELLO, **extra}  # no `models`, rest intact


# --- 8. `free` picks only models that can take the request ------------------------------------

IMAGE_MESSAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize(
    ("request_fields", "capable"),
    [
        pytest.param({"messages": IMAGE_MESSAGE}, {MISTRAL, GEMMA}, id="image"),
        pytest.param({"tools": TOOLS}, {SCOUT, MISTRAL, QWEN, OPTIMUS}, id="tools"),
        pytest.param({"messages": IMAGE_MESSAGE, "tools": TOOLS}, {MISTRAL}, id="image+tools"),
    ],
)
def test_free_tries_only_models_that_support_the_request(
    serve_proxy: ProxyFactory,
    fake: FakeOpenRouter,
    request_fields: dict[str, Any],
    capable: set[str],
):
    # Every capable model fails; any other model would answer (the fake's default), so a
    # 200 here would mean the proxy sent the request to a model that cannot take it.
    for model in capable:
        fake.set_default(model, provider_502())

    with serve_proxy(max_wait=0) as proxy:
        response = post(proxy, model="free", **request_fields)

    assert response.status_code == 502, response.text
    assert set(fake.attempts) == capable
    # a lone candidate that fails with a 5xx is tried once more; several are walked once
    tries = 2 if len(capable) == 1 else len(capable)
    assert len(fake.attempts) == tries
    assert response.headers["X-Proxy-Attempts"] == str(tries)


def test_free_with_a_photo_sized_image_still_reaches_an_image_model(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    # A ~450 KB photo sent the usual way, as a base64 data URL (600 KB of JSON). OpenRouter
    # bills an image as a fixed number of tokens, not by its base64 length, so both free
    # image models (96k and 8k context) can take it.
    photo = "data:image/jpeg;base64," + "A" * 600_000
    message = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this photo?"},
                {"type": "image_url", "image_url": {"url": photo}},
            ],
        }
    ]

    with serve_proxy(max_wait=0) as proxy:
        response = post(proxy, model="free", messages=message)

    assert response.status_code == 200, response.text[:500]
    assert response.headers["X-Proxy-Model"] in {MISTRAL, GEMMA}


# --- 9. every candidate cooling: wait up to PROXY_MAX_WAIT, else 429 at once ------------------


def rate_limited(retry_after: int) -> HttpError:
    """A provider 429 that says when to come back."""
    failure = provider_429(SCOUT)
    return HttpError(429, failure.body, {"Retry-After": str(retry_after)})


def test_cooling_model_back_within_max_wait_is_waited_for(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, rate_limited(retry_after=1), Reply(content="after the wait"))

    with serve_proxy(max_wait=3) as proxy:
        first = post(proxy, model=SCOUT, models=[MISTRAL])  # answered by the fallback
        started = time.monotonic()
        second = post(proxy, model=SCOUT)
        elapsed = time.monotonic() - started

    assert first.status_code == 200
    assert first.headers["X-Proxy-Model"] == MISTRAL
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "after the wait"
    assert second.headers["X-Proxy-Attempts"] == "1"
    failed, _, retried = fake.chat_requests()
    assert retried.arrived_at - failed.arrived_at >= 0.9  # Retry-After: 1 was honoured
    assert 0.5 <= elapsed < 2.5  # … by waiting inside the second request, not longer


@pytest.mark.parametrize("stream", [False, True])
def test_cooling_beyond_max_wait_gets_429_at_once(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, stream: bool
):
    fake.script(SCOUT, rate_limited(retry_after=60))

    with serve_proxy(max_wait=3) as proxy:
        post(proxy, model=SCOUT)
        started = time.monotonic()
        response = post(proxy, model=SCOUT, stream=stream)
        elapsed = time.monotonic() - started

    assert response.status_code == 429, response.text
    assert elapsed < 1.0
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert SCOUT in response.json()["error"]["message"]
    assert len(fake.chat_requests()) == 1


# --- 10. 402 (credits) moves on only to a zero-priced candidate -------------------------------


@pytest.mark.parametrize("zero_priced", [SCOUT, OPTIMUS])
def test_402_skips_paid_candidates_for_a_zero_priced_one(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, zero_priced: str
):
    fake.script(GPT, credits_402())

    with serve_proxy(chains={"credits": [GPT, HAIKU, zero_priced]}, max_wait=0) as proxy:
        response = post(proxy, model="credits")

    assert response.status_code == 200, response.text
    assert fake.attempts == [GPT, zero_priced]
    assert response.headers["X-Proxy-Model"] == zero_priced


def test_402_with_only_paid_candidates_left_is_relayed(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(GPT, credits_402())

    with serve_proxy(chains={"paid": [GPT, HAIKU]}, max_wait=0) as proxy:
        response = post(proxy, model="paid")

    assert response.status_code == 402
    assert "Insufficient credits" in response.json()["error"]["message"]
    assert fake.attempts == [GPT]


# --- 11. PROXY_ALLOW_PAID decides whether `free` may end on a priced model --------------------


@pytest.mark.parametrize("allow_paid", [False, True])
def test_free_adds_the_cheapest_priced_model_only_when_allowed(
    serve_proxy: ProxyFactory, fake: FakeOpenRouter, allow_paid: bool
):
    for model in FREE_POOL:
        fake.set_default(model, provider_502())

    with serve_proxy(max_wait=0, allow_paid=allow_paid) as proxy:
        response = post(proxy, model="free")

    assert sorted(fake.attempts[: len(FREE_POOL)]) == sorted(FREE_POOL)  # the free ones first
    if allow_paid:
        assert response.status_code == 200, response.text
        assert fake.attempts[len(FREE_POOL) :] == [SCOUT_PAID]
        assert response.headers["X-Proxy-Model"] == SCOUT_PAID
    else:
        assert response.status_code == 502
        assert len(fake.attempts) == len(FREE_POOL)
        assert not PRICED & set(fake.attempts)


# --- 12. `openrouter-proxy models --free` shows cooldowns, or the upstream catalogue ----------


def run_models_cli(cwd: Path, port: int, upstream: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "OPENROUTER_"))}
    env |= {
        "PROXY_HOST": "127.0.0.1",
        "PROXY_PORT": str(port),
        "OPENROUTER_BASE_URL": f"{upstream}/api/v1",
        "OPENROUTER_API_KEY": FAKE_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "models", "--free", "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_models_cli_shows_cooldowns_from_the_proxy_else_the_upstream_catalogue(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, fake_server: LiveServer, tmp_path: Path
):
    fake.script(SCOUT, provider_429(SCOUT))

    with start_proxy(max_wait=0) as proxy:
        limited = post(proxy, model=SCOUT)
        asked_at = time.time()
        from_proxy = run_models_cli(tmp_path, proxy.port, fake_server.url)
    # The same settings once the proxy is gone: the CLI falls back to the upstream catalogue.
    from_upstream = run_models_cli(tmp_path, proxy.port, fake_server.url)

    assert limited.status_code == 429
    by_id = {row["id"]: row for row in from_proxy}
    assert all(row["free"] is True for row in from_proxy)
    assert set(FREE_POOL) <= set(by_id)
    assert not PRICED & set(by_id)
    assert by_id[SCOUT]["cooldown_until"] is not None
    assert by_id[SCOUT]["cooldown_until"] > asked_at
    assert by_id[MISTRAL]["cooldown_until"] is None

    ids = {row["id"] for row in from_upstream}
    assert set(FREE_POOL) <= ids
    assert not PRICED & ids
    assert "free" not in ids  # the proxy's virtual model: proof this list came from upstream
    assert all(row["free"] is True and row["cooldown_until"] is None for row in from_upstream)
