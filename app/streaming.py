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

from app.errors import UpstreamBroken, UpstreamError, UpstreamTimeout
from app.sse import DONE_EVENT, Kind, classify, split_events
from app.upstream import OpenedStream, check_event_size, next_chunk


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
                    error = data.get("error")
                    self.error = error if isinstance(error, dict) else {"message": str(error)}
                if isinstance(data.get("usage"), dict):
                    self.usage = data["usage"]
                choices = data.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]


def error_event(error: UpstreamError, model: str) -> bytes:
    """One chunk with a top-level OpenAI-shaped `error` and a terminating choice."""
    chunk = {
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
        **error.body(),
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def relay(
    opened: OpenedStream, on_finish: Callable[[StreamOutcome], None]
) -> AsyncIterator[bytes]:
    outcome = StreamOutcome()
    try:
        outcome.scan(opened.head)
        yield opened.head
        while not outcome.done:
            chunk = await next_chunk(opened.reader, opened.model)
            if chunk is None:
                break
            block = opened.splitter.feed(chunk)
            check_event_size(opened.splitter, opened.model)
            if block:
                block = opened.redactor.bytes(block)
                outcome.scan(block)
                yield block
        if outcome.done:
            await opened.drain()
        else:
            if outcome.error is None:
                failure = UpstreamBroken(
                    f"{opened.model}: OpenRouter ended the stream before it finished"
                )
                outcome.error = failure.body()["error"]
                yield error_event(failure, opened.model)
            yield DONE_EVENT
    except UpstreamError as exc:
        if isinstance(exc, UpstreamTimeout):
            exc = UpstreamTimeout(
                f"{opened.model}: the stream passed PROXY_TOTAL_TIMEOUT and was cut off"
            )
        outcome.error = exc.body()["error"]
        yield error_event(exc, opened.model) + DONE_EVENT
    except (asyncio.CancelledError, GeneratorExit):
        outcome.cancelled = True
        raise
    finally:
        await opened.aclose()
        on_finish(outcome)


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
