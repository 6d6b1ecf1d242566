"""Reading an upstream body under its deadlines (DESIGN §5): a whole answer, or a stream
up to its first content event; transport errors and deadlines become UpstreamErrors, and
nothing held in memory grows past MAX_ANSWER_BYTES.
"""

from __future__ import annotations

import anyio

from app.errors import UpstreamBroken, UpstreamTimeout
from app.request import Dialect
from app.sse import EventSplitter, Kind, split_events
from app.upstream.deadlines import Deadline, DeadlineReader
from app.upstream.transport import UpstreamResponse

_WHITESPACE = b" \t\r\n"
# Bound on an upstream answer held in memory: a non-stream body, or one SSE event still
# incomplete (DESIGN §5: at least 64 MiB). Above it the attempt is broken, not an OOM.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


_MIB_CAP = MAX_ANSWER_BYTES // (1024 * 1024)


def check_event_size(splitter: EventSplitter, model: str) -> None:
    """An SSE event still incomplete past the cap is a broken attempt, not an OOM."""
    if len(splitter.tail) > MAX_ANSWER_BYTES:
        raise UpstreamBroken(f"{model}: one event from OpenRouter passed {_MIB_CAP} MiB")


def malformed(model: str) -> UpstreamBroken:
    """A stream event no client could read (DESIGN §5): a broken attempt before the first
    content, the stream's end after it."""
    return UpstreamBroken(f"{model}: OpenRouter sent a malformed stream event")


async def next_chunk(reader: DeadlineReader, model: str) -> bytes | None:
    """The next chunk, with transport errors and the deadline mapped to UpstreamError."""
    try:
        return await reader.next()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{model}: no answer from OpenRouter in time") from exc
    except ConnectionError as exc:
        raise UpstreamBroken(f"{model}: the connection to OpenRouter broke ({exc})") from exc


async def read_answer(response: UpstreamResponse, deadline: Deadline, model: str) -> bytes:
    """The body minus leading whitespace; whitespace does not count as a first byte."""
    reader = DeadlineReader(response.chunks(), deadline.first_byte)
    parts: list[bytes] = []
    size = 0
    try:
        while (chunk := await next_chunk(reader, model)) is not None:
            if not parts:
                chunk = chunk.lstrip(_WHITESPACE)
                if not chunk:
                    continue
                reader.extend_to(deadline.total)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise UpstreamBroken(f"{model}: OpenRouter's answer passed {_MIB_CAP} MiB")
            parts.append(chunk)
    finally:
        reader.close()
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def first_content(
    reader: DeadlineReader, splitter: EventSplitter, model: str, dialect: Dialect
) -> bytes:
    """Read until the first content event; return held events, it, and what followed it."""
    held: list[bytes] = []
    while (chunk := await next_chunk(reader, model)) is not None:
        events = split_events(splitter.feed(chunk))
        check_event_size(splitter, model)
        for i, event in enumerate(events):
            kind, data = dialect.classify(event)
            if kind is Kind.KEEPALIVE:
                continue  # nothing can be sent before the commit (DESIGN §5)
            if kind is Kind.ERROR:
                assert data is not None
                raise dialect.rejection(data, model)
            if kind is Kind.DONE:
                raise UpstreamBroken(f"{model}: the stream ended before any content")
            if kind is Kind.MALFORMED:
                raise malformed(model)
            if kind is Kind.CONTENT:
                return b"".join(held) + b"".join(events[i:])
            held.append(event)
    raise UpstreamBroken(f"{model}: the stream ended before any content")


async def close_response(response: UpstreamResponse) -> None:
    """Close even when the request task is being cancelled (client disconnect); without a
    cancel scope when the transport closes at once (aiohttp: every request), since that
    scope cost about 4 % of a request's CPU (bench/README.md, "Profile")."""
    if response.close_now():
        return
    with anyio.CancelScope(shield=True):
        await response.aclose()
