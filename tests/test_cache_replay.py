"""Replayed hits read, to the real openai SDK, exactly like the answers they were stored from.

Two directions: a stored JSON answer replayed as SSE must stream the same content and tool
calls; a relayed stream (the fake's real one) folded by StreamAssembler must parse, as a
non-stream answer, to the same content. A tiny app on 127.0.0.1 serves the bytes under test.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.routes import INFERENCE
from app.cache.recorder import StreamRecorder
from app.cache.replay import StreamAssembler, completion_to_sse, render_hit
from app.cache.storable import is_storable
from app.cache.store import Entry
from app.sse import DONE_EVENT, EventSplitter, split_events
from tests.fake_openrouter import (
    DEFAULT_CONTENT,
    FAKE_KEY,
    SCOUT,
    CutOff,
    Drop,
    ErrorBody200,
    FakeOpenRouter,
    FinishError200,
    Reply,
)
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21, "cost": 0}

CHAT = {
    "id": "gen-1739458867-kUKFjpDGCEBBvK6V46PX",
    "object": "chat.completion",
    "created": 1739458867,
    "model": SCOUT,
    "provider": "Chutes",
    "system_fingerprint": None,
    "choices": [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": "Hello! How can I help?",
                "refusal": None,
                "reasoning": "The user greets me.",
            },
        }
    ],
    "usage": USAGE,
}
TOOLS = copy.deepcopy(CHAT)
TOOLS["choices"][0].update(finish_reason="tool_calls", native_finish_reason="tool_calls")
TOOLS["choices"][0]["message"] = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    ],
}
LEGACY = {
    "id": "gen-1739458867-legacy00000000000000",
    "object": "text_completion",
    "created": 1739458867,
    "model": SCOUT,
    "choices": [{"index": 0, "text": "Once upon a time", "finish_reason": "length"}],
    "usage": USAGE,
}

DIALECTS = {dialect.name: dialect for dialect in INFERENCE.values()}


class Bytes:
    """A tiny upstream stand-in: answers every POST with the bytes and type under test."""

    def __init__(self) -> None:
        self.body = b""
        self.media_type = "application/json"
        self.app = Starlette(routes=[Route("/v1/{path:path}", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> Response:
        return Response(self.body, media_type=self.media_type)

    def serve(self, body: bytes, media_type: str) -> None:
        self.body, self.media_type = body, media_type


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Bytes, OpenAI]]:
    tiny = Bytes()
    with (
        LiveServer(tiny.app) as server,
        OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as sdk,
    ):
        yield tiny, sdk


def sdk_stream(served: tuple[Bytes, OpenAI], sse: bytes) -> dict[str, Any]:
    """Stream `sse` through the SDK and accumulate it as a client would."""
    tiny, sdk = served
    tiny.serve(sse, "text/event-stream")
    content, reasoning, finish, usage = "", "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in sdk.chat.completions.create(model=SCOUT, messages=HELLO, stream=True):  # type: ignore[arg-type]
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += getattr(choice.delta, "reasoning", None) or ""
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] = call.function.name or slot["name"]
                    slot["arguments"] += call.function.arguments or ""
    return {
        "content": content,
        "reasoning": reasoning,
        "finish": finish,
        "usage": usage.model_dump(exclude_none=True) if usage else None,
        "tool_calls": [calls[i] for i in sorted(calls)],
    }


def sdk_parse(served: tuple[Bytes, OpenAI], body: bytes) -> Any:
    tiny, sdk = served
    tiny.serve(body, "application/json")
    return sdk.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]


# -- stored JSON → SSE --------------------------------------------------------------------------


def test_a_stored_answer_streams_the_same_content_reasoning_and_finish(served):
    got = sdk_stream(served, completion_to_sse(orjson.dumps(CHAT), DIALECTS["chat"]))
    message = CHAT["choices"][0]["message"]
    assert got["content"] == message["content"]
    assert got["reasoning"] == message["reasoning"]
    assert got["finish"] == "stop"
    assert got["tool_calls"] == []


def test_stored_tool_calls_stream_as_indexed_deltas_the_sdk_merges(served):
    got = sdk_stream(served, completion_to_sse(orjson.dumps(TOOLS), DIALECTS["chat"]))
    expected = [
        {"id": c["id"], **c["function"]} for c in TOOLS["choices"][0]["message"]["tool_calls"]
    ]
    assert got["tool_calls"] == expected
    assert got["finish"] == "tool_calls"
    assert got["content"] == ""


def test_the_usage_chunk_is_sent_only_when_the_request_asked_for_it(served):
    without = completion_to_sse(orjson.dumps(CHAT), DIALECTS["chat"])
    with_usage = completion_to_sse(orjson.dumps(CHAT), DIALECTS["chat"], include_usage=True)
    assert sdk_stream(served, without)["usage"] is None
    assert sdk_stream(served, with_usage)["usage"] == USAGE
    last_data = with_usage.split(b"\n\n")[-3]
    assert orjson.loads(last_data[6:])["choices"] == []
    assert with_usage.endswith(DONE_EVENT) and without.endswith(DONE_EVENT)


def test_a_stored_legacy_completion_streams_as_text_completion_chunks(served):
    tiny, sdk = served
    tiny.serve(
        completion_to_sse(orjson.dumps(LEGACY), DIALECTS["completions"], True), "text/event-stream"
    )
    chunks = list(sdk.completions.create(model=SCOUT, prompt="Once", stream=True))
    text = "".join(c.text for chunk in chunks for c in chunk.choices)
    assert text == "Once upon a time"
    assert [c.finish_reason for chunk in chunks for c in chunk.choices][-1] == "length"
    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 21


# -- relayed stream → stored JSON ---------------------------------------------------------------


def relay(fake_server: LiveServer, route: str = "chat/completions") -> list[bytes]:
    """The fake's real stream, cut into events as the proxy's relay cuts them."""
    splitter, events = EventSplitter(), []
    body = {"model": SCOUT, "messages": HELLO, "prompt": "hi", "stream": True}
    with httpx.stream(
        "POST",
        f"{fake_server.url}/api/v1/{route}",
        json=body,
        headers={"Authorization": f"Bearer {FAKE_KEY}"},
    ) as response:
        try:
            for chunk in response.iter_raw():
                events += split_events(splitter.feed(chunk))
        except httpx.HTTPError:
            pass  # a dropped connection: what was relayed so far is what the proxy saw
    return events


def assemble(events: list[bytes], route: str = "chat") -> bytes | None:
    assembler = StreamAssembler(DIALECTS[route])
    for event in events:
        assembler.feed(event)
    return assembler.result()


def test_a_relayed_stream_folds_into_an_answer_the_sdk_parses_the_same(
    served, fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Reply(content="one two three four", chunks=4, reasoning="thinking hard"))
    assembled = assemble(relay(fake_server))
    assert assembled is not None and is_storable(DIALECTS["chat"], assembled)
    answer = sdk_parse(served, assembled)
    assert answer.choices[0].message.content == "one two three four"
    assert answer.choices[0].message.reasoning == "thinking hard"  # type: ignore[attr-defined]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == SCOUT
    assert answer.id.startswith("gen-")
    assert answer.usage is not None and answer.usage.total_tokens > 0


def test_assembled_and_replayed_again_streams_the_same_content(
    served, fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Reply(content="alpha beta gamma", chunks=3))
    assembled = assemble(relay(fake_server))
    assert assembled is not None
    got = sdk_stream(served, completion_to_sse(assembled, DIALECTS["chat"], include_usage=True))
    assert got["content"] == "alpha beta gamma"
    assert got["usage"] == orjson.loads(assembled)["usage"]


@pytest.mark.parametrize(
    "behaviour",
    [
        FinishError200(),
        FinishError200(done=False),
        Drop(after_chunks=2),
        ErrorBody200(error={"code": 429, "message": "Rate limit exceeded: free-models-per-day"}),
        CutOff(),
    ],
    ids=["finish-error", "finish-error-no-done", "dropped", "in-band-error", "cut-off"],
)
def test_a_stream_that_failed_or_did_not_finish_is_not_stored(
    behaviour, fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, behaviour)
    assert assemble(relay(fake_server)) is None


def test_a_finished_stream_without_done_is_complete(fake: FakeOpenRouter, fake_server: LiveServer):
    fake.script(SCOUT, Reply(done=False))
    assembled = assemble(relay(fake_server))
    assert assembled is not None
    assert orjson.loads(assembled)["choices"][0]["message"]["content"] == DEFAULT_CONTENT


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": SCOUT}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + orjson.dumps({**body, "choices": [choice], **extra}) + b"\n\n"


def test_tool_call_fragments_merge_by_index_into_the_sdk_shape(served):
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    events = [
        b": OPENROUTER PROCESSING\n\n",
        chunk({"role": "assistant", "content": ""}),
        chunk(call(0, id="call_1", type="function", function={"name": "get_weather"})),
        chunk(call(0, function={"arguments": '{"city": '})),
        chunk(call(1, id="call_2", type="function", function={"name": "get_time"})),
        chunk(call(0, function={"arguments": '"Paris"}'})),
        chunk(call(1, function={"arguments": '{"tz": "CET"}'})),
        chunk({}, "tool_calls"),
        DONE_EVENT,
    ]
    assembled = assemble(events)
    assert assembled is not None
    message = sdk_parse(served, assembled).choices[0].message
    assert message.content is None
    got = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]
    assert got == [
        ("call_1", "get_weather", '{"city": "Paris"}'),
        ("call_2", "get_time", '{"tz": "CET"}'),
    ]
    assert sdk_stream(served, completion_to_sse(assembled, DIALECTS["chat"]))["tool_calls"] == [
        {"id": i, "name": n, "arguments": a} for i, n, a in got
    ]


def test_a_choice_without_finish_is_not_stored():
    assert assemble([chunk({"role": "assistant", "content": "half"}), DONE_EVENT]) is None


def test_legacy_completion_chunks_fold_into_a_text_completion():
    def text(piece: str, finish: str | None = None) -> bytes:
        choice = {"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}
        body = {"id": "gen-2", "object": "text_completion", "model": SCOUT, "choices": [choice]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    assembled = assemble([text("Once "), text("upon"), text("", "length")], "completions")
    assert assembled is not None
    answer = orjson.loads(assembled)
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == "Once upon"
    assert answer["choices"][0]["finish_reason"] == "length"


def test_the_assembler_gives_up_past_its_limit():
    assembler = StreamAssembler(DIALECTS["chat"], limit=100)
    for _ in range(5):
        assembler.feed(chunk({"content": "x" * 50}))
    assembler.feed(chunk({}, "stop"))
    assert assembler.result() is None


# -- Responses and Messages: stored as relayed --------------------------------------------------


def data(obj: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


RESPONSES = [
    b": \n\n",
    data({"type": "response.created", "response": {"status": "in_progress", "error": None}}),
    data({"type": "response.output_text.delta", "delta": "Hel"}),
    data({"type": "response.output_text.delta", "delta": "lo"}),
    data({"type": "response.completed", "response": {"status": "completed", "error": None}}),
    DONE_EVENT,
]
MESSAGES = [
    data({"type": "message_start", "message": {"type": "message", "content": []}}, "message_start"),
    data({"type": "content_block_delta", "delta": {"text": "Hi"}}, "content_block_delta"),
    data({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta"),
    data({"type": "message_stop"}, "message_stop"),
    b"event: data\ndata: [DONE]\n\n",
]


def record(route: str, events: list[bytes]) -> bytes | None:
    recorder = StreamRecorder(DIALECTS[route])
    for event in events:
        recorder.feed(event)
    return recorder.result()


@pytest.mark.parametrize(("route", "events"), [("responses", RESPONSES), ("messages", MESSAGES)])
def test_a_completed_stream_is_kept_byte_for_byte_and_replayed_as_is(route, events):
    stored = record(route, events)
    assert stored == b"".join(events)
    entry = Entry(body=stored, stream=True, model=SCOUT, created=0.0)
    hit = render_hit(entry, DIALECTS[route], stream=True, include_usage=False)
    assert hit is not None and hit.body == stored and hit.media_type == "text/event-stream"
    assert render_hit(entry, DIALECTS[route], stream=False, include_usage=False) is None


@pytest.mark.parametrize(
    ("route", "events"),
    [
        ("responses", RESPONSES[:-2]),  # never completed
        ("responses", [*RESPONSES[:-2], data({"type": "response.failed", "response": {}})]),
        ("responses", [*RESPONSES[:-2], data({"type": "response.incomplete", "response": {}})]),
        ("messages", MESSAGES[:2]),
        (
            "messages",
            [
                *MESSAGES[:2],
                data({"type": "error", "error": {"type": "overloaded_error"}}, "error"),
                MESSAGES[3],
            ],
        ),
    ],
    ids=["cut", "failed", "incomplete", "messages-cut", "messages-error"],
)
def test_a_stream_that_failed_or_stopped_short_is_not_kept(route, events):
    assert record(route, events) is None


def test_chat_hits_serve_both_modes_from_one_stored_answer():
    entry = Entry(body=orjson.dumps(CHAT), stream=False, model=SCOUT, created=0.0)
    plain = render_hit(entry, DIALECTS["chat"], stream=False, include_usage=False)
    assert plain is not None and plain.body == entry.body
    assert plain.media_type == "application/json"
    streamed = render_hit(entry, DIALECTS["chat"], stream=True, include_usage=True)
    assert streamed is not None and streamed.media_type == "text/event-stream"
    assert streamed.body == completion_to_sse(entry.body, DIALECTS["chat"], include_usage=True)


# -- which non-stream answers may be stored -----------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "storable"),
    [
        ("chat", CHAT, True),
        ("chat", TOOLS, True),
        ("completions", LEGACY, True),
        ("chat", {"error": {"code": 429, "message": "Rate limit"}, "user_id": "u"}, False),
        ("chat", {**CHAT, "choices": []}, False),
        ("chat", {"id": "x", "object": "chat.completion"}, False),
        (
            "chat",
            {**CHAT, "choices": [{**CHAT["choices"][0], "finish_reason": "error"}]},
            False,
        ),
        ("chat", {**CHAT, "choices": [{**CHAT["choices"][0], "finish_reason": None}]}, False),
        ("responses", {"object": "response", "status": "completed", "error": None}, True),
        ("responses", {"object": "response", "status": "incomplete", "error": None}, False),
        ("responses", {"object": "response", "status": "failed", "error": {"code": "x"}}, False),
        ("messages", {"type": "message", "content": [], "stop_reason": "end_turn"}, True),
        ("messages", {"type": "error", "error": {"type": "api_error"}}, False),
        ("embeddings", {"object": "list", "data": [{"embedding": [0.1], "index": 0}]}, True),
        ("embeddings", {"object": "list", "data": []}, False),
    ],
)
def test_storable(route, body, storable):
    assert is_storable(DIALECTS[route], orjson.dumps(body)) is storable


def test_cut_off_or_whitespace_bodies_are_not_storable():
    whole = orjson.dumps(CHAT)
    assert is_storable(
        DIALECTS["chat"], b"\n \n" + whole
    )  # OpenRouter's leading keep-alive is fine
    assert not is_storable(DIALECTS["chat"], whole[: len(whole) // 2])
    assert not is_storable(DIALECTS["chat"], b"\n\n")
