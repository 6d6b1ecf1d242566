"""OpenRouterClient: what counts as an answer, and how each upstream failure is classified
(unit tests on httpx.MockTransport; the e2e tests cover the same against a live fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from app.api.chat import CHAT as CHAT_DIALECT
from app.errors import UpstreamBroken, UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from app.request import Usage
from app.upstream.client import Call, OpenRouterClient
from app.upstream.httpx_transport import HttpxTransport
from app.upstream.relay import StreamOutcome, relay
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

ANSWER = {
    "id": "gen-1",
    "model": "a/b:free",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}
CHAT = CHAT_DIALECT.parse(
    b'{"model":"a/b:free","messages":[{"role":"user","content":"x"}]}', "free"
)
CALL = Call(CHAT, {}, "rid")


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> OpenRouterClient:
    return OpenRouterClient(make_settings(), HttpxTransport(httpx.MockTransport(handler)))


def sse(*events: bytes) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for event in events:
            yield event

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def chunk(delta: dict, finish: str | None = None) -> bytes:
    data = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def test_leading_whitespace_is_tolerated_and_dropped():
    upstream = client_for(lambda r: httpx.Response(200, content=b"\n \n" + orjson.dumps(ANSWER)))
    answer = await upstream.complete(CALL, "a/b:free")
    assert orjson.loads(answer.body) == ANSWER


@pytest.mark.parametrize(
    ("body", "error", "status"),
    [
        (
            b'{"error":{"code":429,"message":"Rate limit exceeded"},"user_id":"u"}',
            UpstreamRejected,
            429,
        ),
        (
            orjson.dumps(
                {"choices": [{"finish_reason": "error", "error": {"code": 502, "message": "x"}}]}
            ),
            UpstreamRejected,
            502,
        ),
        (b"   \n\n  ", UpstreamBroken, None),
        (b'{"id":"gen-1","choices":[{"index":0,"mess', UpstreamBroken, None),
        (b'{"id":"gen-1","choices":[]}', UpstreamBroken, None),
    ],
)
async def test_a_200_without_a_usable_answer_is_a_failed_attempt(body, error, status):
    upstream = client_for(lambda r: httpx.Response(200, content=body))
    with pytest.raises(error) as raised:
        await upstream.complete(CALL, "a/b:free")
    if status is not None:
        assert raised.value.status == status


async def test_error_status_keeps_message_metadata_and_rate_limit_headers():
    body = {
        "error": {
            "code": 429,
            "message": "Provider returned error",
            "metadata": {
                "raw": "a/b:free is temporarily rate-limited upstream",
                "provider_name": "Venice",
            },
        }
    }
    upstream = client_for(
        lambda r: httpx.Response(429, json=body, headers={"X-RateLimit-Reset": "1700000000000"})
    )
    with pytest.raises(UpstreamRejected) as raised:
        await upstream.complete(CALL, "a/b:free")
    error = raised.value
    assert error.status == 429 and error.status_code == 429
    assert error.body()["error"]["metadata"]["raw"].endswith("rate-limited upstream")
    assert error.headers["x-ratelimit-reset"] == "1700000000000"


async def test_non_json_error_pages_are_described():
    upstream = client_for(lambda r: httpx.Response(502, content=b"<html>Bad gateway</html>"))
    with pytest.raises(UpstreamRejected) as raised:
        await upstream.complete(CALL, "a/b:free")
    assert raised.value.status_code == 502
    assert "Bad gateway" in raised.value.message


async def test_stream_commits_at_first_content_with_the_role_chunk_held():
    role = chunk({"role": "assistant", "content": ""})
    text = chunk({"content": "Hi"})
    upstream = client_for(
        lambda r: sse(b": OPENROUTER PROCESSING\n\n", role, b": OPENROUTER PROCESSING\n\n", text)
    )
    opened = await upstream.open_stream(CALL, "a/b:free")
    assert opened.head == role + text
    await opened.aclose()


@pytest.mark.parametrize(
    ("events", "error"),
    [
        (
            (
                b": OPENROUTER PROCESSING\n\n",
                b'data: {"error":{"code":429,"message":"free-models-per-day"}}\n\n',
            ),
            UpstreamRejected,
        ),
        ((chunk({"role": "assistant"}), b"data: [DONE]\n\n"), UpstreamBroken),
        ((b": OPENROUTER PROCESSING\n\n",), UpstreamBroken),
    ],
)
async def test_stream_failures_before_content_are_failed_attempts(events, error):
    upstream = client_for(lambda r: sse(*events))
    with pytest.raises(error):
        await upstream.open_stream(CALL, "a/b:free")


async def collect(
    upstream: OpenRouterClient, *, include_usage: bool = True
) -> tuple[bytes, StreamOutcome]:
    outcomes: list[StreamOutcome] = []

    async def finished(outcome: StreamOutcome) -> None:
        outcomes.append(outcome)

    opened = await upstream.open_stream(CALL, "a/b:free")
    parts = relay(opened, CHAT_DIALECT, finished, include_usage=include_usage)
    body = b"".join([part async for part in parts])
    return body, outcomes[0]


USAGE_ONLY = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'


async def test_relay_passes_bytes_through_and_reads_usage_on_the_side():
    events = [chunk({"content": "Hi"}), chunk({}, "stop"), USAGE_ONLY, b"data: [DONE]\n\n"]
    body, outcome = await collect(client_for(lambda r: sse(*events)))
    assert body == b"".join(events)
    assert outcome.done and outcome.usage == Usage(3, 4, None)
    assert outcome.finished and outcome.error is None


@pytest.mark.parametrize("one_chunk", [False, True], ids=["event-per-chunk", "all-in-one"])
async def test_usage_only_chunk_is_dropped_unless_asked_for_but_still_read(one_chunk: bool):
    events = [chunk({"content": "Hi"}), chunk({}, "stop"), USAGE_ONLY, b"data: [DONE]\n\n"]
    parts = [b"".join(events)] if one_chunk else events
    body, outcome = await collect(client_for(lambda r: sse(*parts)), include_usage=False)
    assert body == b"".join(e for e in events if e != USAGE_ONLY)  # the rest byte for byte
    assert outcome.usage == Usage(3, 4, None)


async def test_stream_finished_without_done_gets_done_and_no_error():
    events = [chunk({"content": "Hi"}), chunk({}, "stop"), USAGE_ONLY]  # no [DONE]
    body, outcome = await collect(client_for(lambda r: sse(*events)))
    assert body == b"".join(events) + b"data: [DONE]\n\n"
    assert outcome.error is None and outcome.done


async def test_stream_cut_short_ends_with_one_error_event_and_done():
    body, outcome = await collect(client_for(lambda r: sse(chunk({"content": "Hi"}), b"data: {")))
    events = [e for e in body.split(b"\n\n") if e]
    assert events[0] == chunk({"content": "Hi"}).rstrip()
    assert b'"finish_reason":"error"' in events[1] and b'"error":{"message"' in events[1]
    assert events[2] == b"data: [DONE]"
    assert len(events) == 3 and outcome.error is not None


async def test_mid_stream_error_event_is_relayed_once_then_done():
    failure = (
        b'data: {"error":{"code":502,"message":"Provider disconnected"},'
        b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}\n\n'
    )
    body, outcome = await collect(client_for(lambda r: sse(chunk({"content": "Hi"}), failure)))
    assert body == chunk({"content": "Hi"}) + failure + b"data: [DONE]\n\n"
    assert outcome.error == {"code": 502, "message": "Provider disconnected"}


@pytest.mark.parametrize(
    ("raised", "error", "status"),
    [
        (httpx.ConnectTimeout("connect timed out"), UpstreamTimeout, 504),
        (httpx.ConnectError("connection refused"), UpstreamUnreachable, 502),
    ],
)
async def test_connect_failures_are_timeouts_or_unreachable(raised, error, status):
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(error) as caught:
        await client_for(handler).complete(CALL, "a/b:free")
    assert caught.value.status_code == status
    assert caught.value.message.startswith("a/b:free: ")


@pytest.mark.parametrize(
    "raised",
    [
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
)
async def test_a_connection_broken_after_connecting_is_the_models_broken_attempt(raised):
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(UpstreamBroken) as caught:
        await client_for(handler).complete(CALL, "a/b:free")
    assert caught.value.status_code == 502
    assert caught.value.message.startswith("a/b:free: OpenRouter closed the connection")
