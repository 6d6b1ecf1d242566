"""Server-sent events, read on the side: split into events, classify, never re-encode.

Handles LF and CRLF line endings and events split across chunks (as openai-python's
`_SSELineDecoder` does); CR-only framing is accepted for the blank-line separator too.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import orjson

_BOUNDARY = re.compile(rb"\r?\n\r?\n|\r\r")
DONE_EVENT = b"data: [DONE]\n\n"
# isinstance() targets for a field that may be absent or null (built once: every relayed
# event is checked against them).
OPTIONAL_TEXT = (str, type(None))
OPTIONAL_OBJECT = (dict, type(None))


class EventSplitter:
    """Cuts a byte stream at event boundaries; keeps the unfinished tail for the next chunk."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """Every complete event received so far, as one bytes object (maybe empty)."""
        data = self._tail + chunk if self._tail else chunk
        if b"\r" not in data:
            end = data.rfind(b"\n\n")
            cut = -1 if end < 0 else end + 2
        else:
            cut = -1
            for match in _BOUNDARY.finditer(data):
                cut = match.end()
        if cut < 0:
            self._tail = data
            return b""
        self._tail = data[cut:]
        return data[:cut]

    @property
    def tail(self) -> bytes:
        return self._tail


def split_events(block: bytes) -> list[bytes]:
    """Split a block of complete events (from `feed`) into single raw events."""
    if b"\r" not in block:  # the common case: LF only, no regex
        if block.find(b"\n\n") == len(block) - 2:
            return [block]  # one event, as most chunks of a stream are
        return [event + b"\n\n" for event in block.split(b"\n\n")[:-1]]
    events: list[bytes] = []
    start = 0
    for match in _BOUNDARY.finditer(block):
        events.append(block[start : match.end()])
        start = match.end()
    return events


def event_data(event: bytes) -> bytes | None:
    """The event's `data` payload; None for comment-only (keep-alive) events."""
    if event.startswith(b"data: ") and event.find(b"\n", 6) == len(event) - 2:
        return event[6:-2]  # the usual `data: {...}\n\n`, one line, LF
    payload: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            payload.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(payload) if payload else None


class Kind(Enum):
    KEEPALIVE = "keepalive"  # a comment, or an event without data
    DONE = "done"  # data: [DONE]
    ERROR = "error"  # top-level "error" (with or without choices)
    CONTENT = "content"  # the first event a client must see (DESIGN §5)
    OTHER = "other"  # role-only, usage-only, an event type the API may add later
    MALFORMED = "malformed"  # not a JSON object, or a known field of the wrong type (DESIGN §5)


def decode(event: bytes) -> tuple[Kind, dict[str, Any] | None]:
    """The kinds every API shares; `Kind.OTHER` with data leaves the questions "is it well
    formed?" and "is this the first content?" to the API's dialect. Data that is not a JSON
    object is malformed: no client of any of the APIs can read it."""
    data = event_data(event)
    if data is None:
        return Kind.KEEPALIVE, None
    if data.startswith(b"[DONE]"):
        return Kind.DONE, None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Kind.MALFORMED, None
    if not isinstance(chunk, dict):
        return Kind.MALFORMED, None
    if chunk.get("error"):
        return Kind.ERROR, chunk
    return Kind.OTHER, chunk


def classify(event: bytes) -> tuple[Kind, dict[str, Any] | None]:
    """An OpenAI chat event: `decode`, with a chunk of the wrong shape as MALFORMED and one
    that carries content as CONTENT."""
    kind, chunk = decode(event)
    if chunk is None or kind is not Kind.OTHER:
        return kind, chunk
    if not well_formed(chunk):
        return Kind.MALFORMED, None
    if is_content(chunk):
        return Kind.CONTENT, chunk
    return kind, chunk


# The fields of a chat delta that clients read as text.
_DELTA_TEXT = ("role", "content", "reasoning", "refusal")


def well_formed(chunk: dict[str, Any]) -> bool:
    """What an OpenAI SDK reads from a chat chunk has its type: `choices` a list of objects,
    each `delta` an object whose text fields are strings and whose tool calls are objects,
    `usage` an object. `{"choices": 5}` is none of that (DESIGN §5: a broken attempt)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not isinstance(chunk.get("usage"), OPTIONAL_OBJECT):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        if not isinstance(choice.get("finish_reason"), OPTIONAL_TEXT):
            return False
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            return False
        for name in _DELTA_TEXT:
            if not isinstance(delta.get(name), OPTIONAL_TEXT):
                return False
        calls = delta.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(_tool_call_ok(call) for call in calls)
        ):
            return False
    return True


def _tool_call_ok(call: Any) -> bool:
    if not isinstance(call, dict):
        return False
    function = call.get("function")
    return function is None or (
        isinstance(function, dict)
        and isinstance(function.get("name"), OPTIONAL_TEXT)
        and isinstance(function.get("arguments"), OPTIONAL_TEXT)
    )


def is_content(chunk: dict[str, Any]) -> bool:
    """A choice whose delta carries text, reasoning or tool calls, or a real finish; the
    chunk is `well_formed`."""
    for choice in chunk["choices"]:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
            return True
        finish = choice.get("finish_reason")
        if finish is not None and finish != "error":
            return True
    return False


def text_size(text: Any) -> int:
    """Bytes of a text field (UTF-8), 0 for anything else: what a cut stream relayed."""
    if not isinstance(text, str):
        return 0
    return len(text) if text.isascii() else len(text.encode())
