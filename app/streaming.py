"""Relay a committed stream: upstream bytes through unchanged, event by event, inspected
on the side; always end with `data: [DONE]` and always close the upstream connection.

Once the first content event has been sent the model cannot change any more (Go's
ReverseProxy: "all we can do is abort"), so an upstream failure becomes one in-band error
event, OpenAI-shaped so SDKs raise it, followed by `[DONE]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import ProxyError, ServerStopping, UpstreamBroken, UpstreamError, UpstreamTimeout
from app.shutdown import OpenStreams
from app.sse import DONE_EVENT, Kind, classify, split_events
from app.upstream import OpenedStream, next_chunk


@dataclass(slots=True)
class StreamOutcome:
    """What the side-scan saw; read by logging now, by usage and cache later."""

    done: bool = False
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    cancelled: bool = False

    def scan(self, block: bytes) -> None:
        """Look only at events that can matter; content deltas are skipped unparsed."""
        if (
            b"[DONE]" in block
            or b'"error"' in block
            or b'"usage"' in block
            or b'"finish_reason":"' in block
            or b'"finish_reason": "' in block
        ):
            self._scan_events(block)

    def _scan_events(self, block: bytes) -> None:
        for event in split_events(block):
            kind, data = classify(event)
            if kind is Kind.DONE:
                self.done = True
            elif data is not None:
                if kind is Kind.ERROR:
                    self.error = data.get("error")
                if isinstance(data.get("usage"), dict):
                    self.usage = data["usage"]
                for choice in data.get("choices") or ():
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]


def error_event(error: ProxyError, model: str) -> bytes:
    """One chunk with a top-level OpenAI-shaped `error` and a terminating choice."""
    chunk = {
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
        **error.body(),
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def relay(
    opened: OpenedStream,
    on_finish: Callable[[StreamOutcome], None],
    *,
    include_usage: bool = False,
    streams: OpenStreams | None = None,
) -> AsyncIterator[bytes]:
    """The stream's bytes for the client. The usage-only chunk (`choices: []`) is read but
    passed on only with `include_usage` (OpenAI's `stream_options.include_usage`)."""
    outcome = StreamOutcome()
    reader = opened.reader
    if streams is not None:
        streams.add(reader)
    try:
        outcome.scan(opened.head)
        head = opened.head if include_usage else _without_usage_chunk(opened.head)
        if head:
            yield head
        while not outcome.done:
            chunk = await next_chunk(reader, opened.model)
            if chunk is None:
                break
            block = opened.splitter.feed(chunk)
            if block:
                if b"data:" in block:
                    reader.touch()  # keep-alive comments do not count as activity
                outcome.scan(block)
                if not include_usage:
                    block = _without_usage_chunk(block)
                if block:
                    yield block
        if outcome.done:
            await opened.drain()
        elif outcome.error is None and outcome.finish_reason not in (None, "error"):
            outcome.done = True  # finished for real; only the terminator was missing
            yield DONE_EVENT
        else:
            if outcome.error is None:
                failure = UpstreamBroken(
                    f"{opened.model}: OpenRouter ended the stream before it finished"
                )
                outcome.error = failure.body()["error"]
                yield error_event(failure, opened.model)
            yield DONE_EVENT
    except UpstreamError as exc:
        ended: ProxyError = exc
        if isinstance(exc, UpstreamTimeout):
            ended = _why_cut(opened)
        outcome.error = ended.body()["error"]
        yield error_event(ended, opened.model) + DONE_EVENT
    except (asyncio.CancelledError, GeneratorExit):
        outcome.cancelled = True
        raise
    finally:
        if streams is not None:
            streams.discard(reader)
        await opened.aclose()
        on_finish(outcome)


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


def _without_usage_chunk(block: bytes) -> bytes:
    """`block` minus any usage-only event (`choices: []`); other events keep their bytes."""
    if b'"usage"' not in block or b"[]" not in block:
        return block
    kept = [event for event in split_events(block) if not _is_usage_only(event)]
    return b"".join(kept)


def _is_usage_only(event: bytes) -> bool:
    kind, data = classify(event)
    return (
        kind is Kind.OTHER
        and data is not None
        and data.get("choices") == []
        and isinstance(data.get("usage"), dict)
    )


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
