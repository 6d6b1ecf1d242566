"""Keeping a Responses or Messages stream for the cache (DESIGN §8): the relayed bytes as
they were sent, complete only at the dialect's completed event and without an error.
"""

from __future__ import annotations

from app.request import Dialect
from app.sse import Kind, decode

_FAILED = frozenset({"response.failed", "response.incomplete", "error"})
_MARKERS = (b"response.completed", b"message_stop", b"response.failed", b"response.inc", b"error")


class StreamRecorder:
    """Keeps a relayed Responses/Messages stream byte for byte, and says if it completed.

    Complete: the dialect's completed event was seen (Responses `response.completed`,
    Messages `message_stop`), and no error (`response.failed`, `response.incomplete`, an
    `error` event). None past `limit`.
    """

    def __init__(self, dialect: Dialect, limit: int = 64 * 1024 * 1024) -> None:
        assert dialect.keeping.completed_event is not None  # only streams kept as sent
        self._terminal = dialect.keeping.completed_event
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = False
        self.failed = False

    def feed(self, event: bytes) -> None:
        """One relayed SSE event, whole (as `app.sse.split_events` cuts them)."""
        if self.failed:
            return
        self._size += len(event)
        if self._size > self.limit:
            self.failed, self._parts = True, []
            return
        self._parts.append(event)
        if any(marker in event for marker in _MARKERS):  # parse only what may end the stream
            kind = _event_type(event)
            if kind in _FAILED:
                self.failed = True
            elif kind == self._terminal:
                self.complete = True

    def result(self) -> bytes | None:
        """The stream to store, or None when it did not complete cleanly."""
        if self.failed or not self.complete:
            return None
        return b"".join(self._parts)


def _event_type(event: bytes) -> str | None:
    """The JSON `type` of an event's data (Responses and Messages both carry one)."""
    kind, chunk = decode(event)
    if kind is Kind.ERROR:
        return "error"
    value = chunk.get("type") if chunk is not None else None
    return value if isinstance(value, str) else None
