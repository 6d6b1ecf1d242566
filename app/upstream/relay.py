"""Relay a committed stream: upstream bytes through unchanged, event by event, inspected
on the side; always end with the dialect's terminator (`data: [DONE]` on the OpenAI APIs,
nothing after `message_stop` on /v1/messages) and always close the upstream connection.
Which events end, fail or carry usage is the dialect's to say (`classify`, `finished`).

Once the first content event has been sent the model cannot change any more (Go's
ReverseProxy: "all we can do is abort"), so an upstream failure (a broken connection, a
stall, an event no client could read) becomes one in-band error event in the route's
format, so SDKs raise it, followed by its terminator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import ProxyError, ServerStopping, UpstreamBroken, UpstreamError, UpstreamTimeout
from app.request import Dialect, Usage
from app.sse import Kind, split_events
from app.upstream.client import OpenedStream
from app.upstream.reading import check_event_size, malformed, next_chunk
from app.upstream.streams import OpenStreams


@dataclass(slots=True)
class StreamOutcome:
    """What the side-scan saw; read by logging, usage, quotas and the cache."""

    dialect: Dialect
    done: bool = False
    error: dict[str, Any] | None = None
    usage: Usage | None = None
    finished: bool = False
    cancelled: bool = False
    malformed: bool = False
    output: int = 0  # bytes of generated text relayed (DESIGN §7)

    def scan(self, block: bytes) -> bytes:
        """`block` up to a malformed event, which ends the stream, or up to `[DONE]`;
        every event is read on the way, for the end, errors, usage and the text relayed."""
        kept = 0
        for event in split_events(block):
            kind, data = self.dialect.classify(event)
            if kind is Kind.MALFORMED:
                self.malformed = True
                return block[:kept]
            kept += len(event)
            if kind is Kind.DONE:
                self.done = True
                return block[:kept]
            if data is None:
                continue
            if kind is Kind.ERROR:
                error = data.get("error")
                self.error = error if isinstance(error, dict) else {"message": str(error)}
            else:
                self.output += self.dialect.output(data)
                self.finished = self.finished or self.dialect.finished(data)
            if (usage := self.dialect.usage(data)) is not None:
                self.usage = usage
        return block

    def spent(self, prompt_tokens: int) -> Usage:
        """The usage OpenRouter reported; for a stream cut before it (the client left, the
        upstream broke or stalled), what was relayed at 4 bytes a token and the request's
        own prompt estimate (`prompt_tokens`), marked as estimated (DESIGN §7)."""
        if self.usage is not None:
            return self.usage
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=-(-self.output // 4),
            estimated=True,
        )


async def relay(
    opened: OpenedStream,
    dialect: Dialect,
    on_finish: Callable[[StreamOutcome], Awaitable[None]],
    *,
    include_usage: bool = False,
    streams: OpenStreams | None = None,
    tap: Callable[[bytes], None] | None = None,
) -> AsyncIterator[bytes]:
    """The stream's bytes for the client, event by event as they arrive; what the
    dialect keeps back (a usage-only chunk the client did not ask for, a terminator its
    SDK cannot parse) is cut out as whole events, every other byte is passed on."""
    outcome = StreamOutcome(dialect)
    reader = opened.reader
    if streams is not None:
        streams.add(reader)
    try:
        block, opened.head = outcome.scan(opened.head), b""  # not kept for the stream's life
        if tap is not None:
            tap(block)
        if block := dialect.relayed(block, include_usage):
            yield block
        while not outcome.done and not outcome.malformed:
            chunk = await next_chunk(reader, opened.model)
            if chunk is None:
                break
            block = opened.splitter.feed(chunk)
            check_event_size(opened.splitter, opened.model)
            if block:
                block = opened.redactor.bytes(block)
                if b"data:" in block:
                    reader.touch()  # keep-alive comments do not count as activity
                block = outcome.scan(block)
                if tap is not None:
                    tap(block)
                if block := dialect.relayed(block, include_usage):
                    yield block
        if outcome.done and not outcome.malformed:
            await opened.drain()
        else:
            yield _tail(outcome, opened, dialect)
    except UpstreamError as exc:
        ended: ProxyError = exc
        if isinstance(exc, UpstreamTimeout):
            ended = _why_cut(opened)
        outcome.error = ended.body()["error"]
        yield dialect.error_event(ended, opened.model)
    except (asyncio.CancelledError, GeneratorExit):
        outcome.cancelled = True
        raise
    finally:
        if streams is not None:
            streams.discard(reader)
        await opened.aclose()
        with anyio.CancelScope(shield=True):
            await on_finish(outcome)


def _tail(outcome: StreamOutcome, opened: OpenedStream, dialect: Dialect) -> bytes:
    """What ends a stream that did not end cleanly: the terminator after a real finish or
    upstream's own error event, else an error event (it broke off, or sent an event no
    client could read)."""
    if outcome.malformed:
        failure = malformed(opened.model)
        outcome.error = failure.body()["error"]
        return dialect.error_event(failure, opened.model)
    if outcome.error is None and outcome.finished:
        outcome.done = True  # finished for real; only the terminator was missing
        return dialect.terminator
    if outcome.error is None:
        failure = UpstreamBroken(f"{opened.model}: OpenRouter ended the stream before it finished")
        outcome.error = failure.body()["error"]
        return dialect.error_event(failure, opened.model)
    return dialect.terminator  # the upstream's own error event was relayed


def _why_cut(opened: OpenedStream) -> ProxyError:
    """The error event for a stream ended by a limit: which one, and what to do."""
    model = opened.model
    if opened.reader.stopped:
        return ServerStopping(
            f"{model}: the proxy is shutting down and ended this stream; retry the request."
        )
    if opened.reader.idle_expired:
        return UpstreamTimeout(
            f"{model}: no data from OpenRouter for PROXY_STREAM_IDLE_TIMEOUT; the stream was ended"
        )
    return UpstreamTimeout(f"{model}: the stream passed PROXY_TOTAL_TIMEOUT and was cut off")


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that notices a client leaving even while upstream is silent,
    and closes the relay (so the upstream connection) at once, not at garbage collection."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(
            content,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
        self._relay = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One watcher task, not an anyio task group: a thousand open streams cost 5 MiB
        # less, and the watcher cancels this task the way asyncio.timeout does.
        task = asyncio.current_task()
        assert task is not None
        finished = left = False

        def client_left(_: asyncio.Future[None]) -> None:
            nonlocal left
            if not finished:
                left = True
                task.cancel()

        watcher = asyncio.ensure_future(self.listen_for_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            await self.stream_response(send)
        except OSError:
            pass  # the client left while we were writing to it
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise
        finally:
            finished = True
            watcher.remove_done_callback(client_left)
            watcher.cancel()
            with anyio.CancelScope(shield=True):
                await self._relay.aclose()  # type: ignore[attr-defined]

    async def stream_response(self, send: Send) -> None:
        """Starlette's, except that the head's header list is let go once sent: Starlette
        keeps it for the response's life, ~1.2 KB a stream for its whole length."""
        head, self.raw_headers = self.raw_headers, []
        await send({"type": "http.response.start", "status": self.status_code, "headers": head})
        del head
        async for chunk in self.body_iterator:  # the relay's bytes, one event at a time
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
