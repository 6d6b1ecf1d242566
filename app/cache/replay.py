"""Serving a hit: stored answers replayed in the shape the request asked for (DESIGN §8).

Chat and legacy completions store one non-stream JSON answer (a relayed stream is folded
into one by `StreamAssembler`) and serve both modes: a stream request gets it back as
OpenAI chunks ending in `data: [DONE]`. Responses and Messages store what was relayed
(JSON, or the SSE bytes exactly as sent) and replay it as it was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.cache.store import Entry
from app.request import Dialect
from app.sse import DONE_EVENT, Kind, classify

_MESSAGE_EXTRAS = ("refusal", "reasoning", "reasoning_details")  # replayed as their own deltas


@dataclass(frozen=True, slots=True)
class Replay:
    """A hit's body and content type."""

    body: bytes
    media_type: str


def render_hit(entry: Entry, dialect: Dialect, stream: bool, include_usage: bool) -> Replay | None:
    """The stored answer as this request wants it; None if it cannot be (serve as a miss)."""
    if dialect.keeping.completed_event is None:
        if entry.stream:
            return None  # folded entries are stored as JSON; a raw stream here is a bug
        if stream:
            body = completion_to_sse(entry.body, dialect, include_usage)
            return Replay(body, "text/event-stream")
        return Replay(entry.body, "application/json")
    if entry.stream != stream:
        return None  # Responses/Messages replay only in the stored mode (the key holds it)
    if stream:
        return Replay(replay_stored_stream(entry), "text/event-stream")
    return Replay(entry.body, "application/json")


def replay_stored_stream(entry: Entry) -> bytes:
    """A stored Responses/Messages stream: the relayed bytes, as they were sent."""
    return entry.body


def completion_to_sse(body: bytes, dialect: Dialect, include_usage: bool = False) -> bytes:
    """A stored chat.completion (or text_completion) as the stream OpenAI would have sent.

    Per choice: role, reasoning/refusal, content, one delta per tool call (index, id,
    type, name and whole arguments), then the finish; the usage chunk (`choices: []`) only
    when the request asked for it with `stream_options.include_usage`.
    """
    answer: dict[str, Any] = orjson.loads(body)
    legacy = dialect.keeping.legacy_chunks
    base: dict[str, Any] = {
        k: answer[k] for k in ("id", "created", "model", "provider") if k in answer
    }
    base["object"] = "text_completion" if legacy else "chat.completion.chunk"
    if "system_fingerprint" in answer:
        base["system_fingerprint"] = answer["system_fingerprint"]
    out: list[bytes] = []

    def emit(choice: dict[str, Any]) -> None:
        out.append(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")

    for position, choice in enumerate(answer.get("choices") or ()):
        index = choice.get("index", position)
        finish = {k: choice[k] for k in ("finish_reason", "native_finish_reason") if k in choice}
        if legacy:
            text = choice.get("text") or ""
            emit(
                {
                    "text": text,
                    "index": index,
                    "logprobs": choice.get("logprobs"),
                    "finish_reason": None,
                }
            )
            emit({"text": "", "index": index, "logprobs": None, **finish})
            continue
        message = choice.get("message") or {}

        def delta(d: dict[str, Any], *, index: int = index, **extra: Any) -> None:
            emit({"index": index, "delta": d, "logprobs": None, "finish_reason": None, **extra})

        delta({"role": message.get("role", "assistant"), "content": ""})
        for name in _MESSAGE_EXTRAS:
            if message.get(name):
                delta({name: message[name]})
        if message.get("content"):
            logprobs = {"logprobs": choice["logprobs"]} if choice.get("logprobs") else {}
            delta({"content": message["content"]}, **logprobs)
        for number, call in enumerate(message.get("tool_calls") or ()):
            delta({"tool_calls": [{"index": number, **call}]})
        emit({"index": index, "delta": {}, "logprobs": None, **finish})
    if include_usage and answer.get("usage") is not None:
        out.append(
            b"data: " + orjson.dumps({**base, "choices": [], "usage": answer["usage"]}) + b"\n\n"
        )
    out.append(DONE_EVENT)
    return b"".join(out)


class _Choice:
    """What one choice's deltas add up to."""

    __slots__ = ("extras", "finish", "logprobs", "native_finish", "parts", "role", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.parts: list[str] = []  # content, or text on legacy completions
        self.extras: dict[str, list[Any]] = {}  # reasoning, refusal: str parts; details: items
        self.tools: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] = []
        self.finish: str | None = None
        self.native_finish: str | None = None


class StreamAssembler:
    """Folds a relayed chat/completions stream into the equivalent non-stream answer.

    Feed it each relayed event (`feed`), or the chunk the relay already parsed
    (`feed_chunk`); `result()` gives the JSON bytes to store, or None when the stream must
    not be stored: an error event, a `finish_reason` of "error", a choice that never
    finished, or more than `limit` bytes of text (the store would refuse it anyway).
    """

    def __init__(self, dialect: Dialect, limit: int = 64 * 1024 * 1024) -> None:
        self.legacy = dialect.keeping.legacy_chunks
        self.limit = limit
        self.failed = False
        self._size = 0
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None

    def feed(self, event: bytes) -> None:
        """One raw SSE event as relayed (comments and [DONE] are ignored)."""
        if self.failed:
            return
        kind, chunk = classify(event)
        if kind is Kind.ERROR:
            self.failed = True
        elif chunk is not None:
            self._size += len(event)
            self.feed_chunk(chunk)

    def feed_chunk(self, chunk: dict[str, Any]) -> None:
        """One parsed `data:` chunk."""
        if self.failed:
            return
        if chunk.get("error") or self._size > self.limit:
            self.failed = True
            return
        for name in ("id", "created", "model", "provider", "system_fingerprint"):
            if chunk.get(name) is not None:
                self._head.setdefault(name, chunk[name])
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        for position, raw in enumerate(chunk.get("choices") or ()):
            if isinstance(raw, dict):
                self._add(raw, position)

    def _add(self, raw: dict[str, Any], position: int) -> None:
        choice = self._choices.setdefault(raw.get("index", position), _Choice())
        if raw.get("finish_reason") is not None:
            choice.finish = raw["finish_reason"]
            choice.native_finish = raw.get("native_finish_reason")
            if choice.finish == "error":
                self.failed = True
        logprobs = raw.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            choice.logprobs.extend(logprobs["content"])
        if self.legacy:
            if raw.get("text"):
                choice.parts.append(raw["text"])
            return
        delta = raw.get("delta") or {}
        if delta.get("role"):
            choice.role = delta["role"]
        if delta.get("content"):
            choice.parts.append(delta["content"])
        for name in _MESSAGE_EXTRAS:
            value = delta.get(name)
            if value:
                parts = choice.extras.setdefault(name, [])
                parts.extend(value) if isinstance(value, list) else parts.append(value)
        for position, call in enumerate(delta.get("tool_calls") or ()):
            _merge_tool_call(choice.tools, call, position)

    def result(self) -> bytes | None:
        """The non-stream answer to store, or None (see the class docstring)."""
        if self.failed or not self._choices:
            return None
        if any(c.finish is None for c in self._choices.values()):
            return None  # cut off: a choice never finished
        answer: dict[str, Any] = {
            "id": self._head.get("id"),
            "object": "text_completion" if self.legacy else "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
        }
        for name in ("provider", "system_fingerprint"):
            if name in self._head:
                answer[name] = self._head[name]
        answer["choices"] = [self._render(i, c) for i, c in sorted(self._choices.items())]
        if self._usage is not None:
            answer["usage"] = self._usage
        return orjson.dumps(answer)

    def _render(self, index: int, choice: _Choice) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index}
        logprobs = {"content": choice.logprobs} if choice.logprobs else None
        if self.legacy:
            out["text"] = "".join(choice.parts)
        else:
            message: dict[str, Any] = {
                "role": choice.role,
                "content": "".join(choice.parts) if choice.parts or not choice.tools else None,
            }
            for name, parts in choice.extras.items():
                joined = "".join(parts) if name != "reasoning_details" else parts
                message[name] = joined
            if choice.tools:
                message["tool_calls"] = [choice.tools[i] for i in sorted(choice.tools)]
            out["message"] = message
        out["logprobs"] = logprobs
        out["finish_reason"] = choice.finish
        if choice.native_finish is not None:
            out["native_finish_reason"] = choice.native_finish
        return out


def _merge_tool_call(tools: dict[int, dict[str, Any]], delta: Any, position: int) -> None:
    """OpenAI's tool-call deltas: the first per index names it, later ones add arguments."""
    if not isinstance(delta, dict):
        return
    index = delta.get("index", position)
    function = delta.get("function") or {}
    call = tools.get(index)
    if call is None:
        call = tools[index] = {
            "id": delta.get("id"),
            "type": delta.get("type") or "function",
            "function": {"name": function.get("name") or "", "arguments": ""},
        }
    else:
        if delta.get("id") and not call["id"]:
            call["id"] = delta["id"]
        if function.get("name") and not call["function"]["name"]:
            call["function"]["name"] = function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]
