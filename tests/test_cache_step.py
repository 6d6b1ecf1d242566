"""The cache step built directly (DESIGN §8): it asks the request's dialect what may be
kept and how it is replayed, so each API's rule shows here without a server. The same
behaviour end to end is in test_e2e_cache.py."""

from __future__ import annotations

import orjson
import pytest

from app.api.chat import CHAT
from app.api.embeddings import EMBEDDINGS
from app.api.messages import MESSAGES
from app.api.responses import RESPONSES
from app.cache.flight import Flights
from app.cache.step import ResponseCache
from app.cache.store import MemoryCache
from app.request import Dialect, ParsedRequest
from app.sse import DONE_EVENT
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

CHAT_ANSWER = {
    "id": "gen-1",
    "object": "chat.completion",
    "model": "vendor/a",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
}
MESSAGE_STREAM = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def cache(mode: str = "all") -> ResponseCache:
    return ResponseCache(make_settings(cache=mode), MemoryCache.from_mb(1, 60), Flights())


def request(dialect: Dialect, body: dict[str, object]) -> ParsedRequest:
    return dialect.parse(orjson.dumps(body), "vendor/a")


def chat(stream: bool = False) -> ParsedRequest:
    return request(CHAT, {"messages": [{"role": "user", "content": "hi"}], "stream": stream})


async def test_a_chat_answer_is_kept_and_replayed_as_a_stream_too():
    step = cache()
    use = await step.lookup(chat(), None, None)
    assert use.status == "MISS"
    await step.keep(use, CHAT, orjson.dumps(CHAT_ANSWER), "vendor/a", {})
    streamed = await step.lookup(chat(stream=True), None, None)
    assert streamed.status == "HIT" and streamed.hit is not None
    assert streamed.hit.media_type == "text/event-stream"
    assert streamed.hit.body.endswith(DONE_EVENT)


async def test_an_unfinished_chat_answer_is_not_kept():
    step = cache()
    unfinished = {**CHAT_ANSWER, "choices": [{"index": 0, "message": {}, "finish_reason": None}]}
    use = await step.lookup(chat(), None, None)
    await step.keep(use, CHAT, orjson.dumps(unfinished), "vendor/a", {})
    assert (await step.lookup(chat(), None, None)).status == "MISS"


async def test_a_messages_stream_is_kept_as_sent_and_replayed_only_as_a_stream():
    step = cache()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    streamed = request(MESSAGES, body)
    use = await step.lookup(streamed, None, None)
    for event in MESSAGE_STREAM:
        use.tap(event)
    await step.keep(use, streamed.dialect, None, "vendor/a", {})
    hit = await step.lookup(streamed, None, None)
    assert hit.hit is not None and hit.hit.body == b"".join(MESSAGE_STREAM)
    plain = request(MESSAGES, {**body, "stream": False})
    assert (await step.lookup(plain, None, None)).status == "MISS"


async def test_a_responses_stream_without_its_completed_event_is_not_kept():
    step = cache()
    streamed = request(RESPONSES, {"input": "hi", "stream": True})
    use = await step.lookup(streamed, None, None)
    use.tap(b'event: response.created\ndata: {"type":"response.created"}\n\n')
    await step.keep(use, streamed.dialect, None, "vendor/a", {})
    assert (await step.lookup(streamed, None, None)).status == "MISS"


async def test_in_deterministic_mode_embeddings_qualify_and_sampled_chat_does_not():
    step = cache("deterministic")
    vectors = request(EMBEDDINGS, {"model": "vendor/e", "input": "hi"})
    assert step.status(vectors, None).status == "MISS"
    assert step.status(chat(), None).status == "BYPASS"
