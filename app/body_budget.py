"""A process-wide bound on the request-body bytes held before a response commits (DESIGN §9,
issue 28; docs/decisions.md, "Request bodies held before commit").

Until its answer commits, a request keeps its body, its parsed JSON and the copy going up,
for a possible second attempt: ~2.5 times the body. A thousand 200 KB prompts arriving at
once held 435 MiB of Python objects before any stream committed. So a request whose
declared body does not fit in what is left waits before its body is read: the server
stops reading its socket past its own small buffer, and TCP holds the rest in the
client's and the kernel's buffers.

- A body of at most SMALL bytes (or of unknown length) never waits: the server has read
  that much before the app asks for it, so holding it back would save nothing, and small
  requests are never slowed. It still counts, so large ones wait for it.
- A request alone is always admitted, whatever its size (charged at most the whole
  budget): nothing deadlocks, and PROXY_MAX_BODY_MB stays the only size limit.
- Waiters are admitted in arrival order, so a large body is not passed over for ever.
- The wait is bounded by the caller's deadline and ends in a 503 (`ProxyOutOfResources`).
"""

from __future__ import annotations

import asyncio
from collections import deque

from app.errors import ProxyOutOfResources

MIB = 1024 * 1024
# Declared body bytes held at once by requests not yet committed; each holds about 2.5
# times its body, so ~40 MiB at the peak of a burst (bench/README.md, "Memory per open
# stream": 8 / 16 / 32 MiB gave 230 / 243 / 267 MiB peak RSS for 1,000 streams of 200 KB
# prompts opened at once; below 16 it saves little and queues more).
BUDGET_BYTES = 16 * MIB
# uvicorn reads a body up to its flow-control high-water mark (64 KiB) before the app asks.
SMALL = 64 * 1024


class BodyBudget:
    """A weighted semaphore in bytes, first come first served for the bodies that wait."""

    __slots__ = ("capacity", "used", "_waiters")

    def __init__(self, capacity: int = BUDGET_BYTES) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, size: int | None, wait: float) -> int:
        """Hold `size` declared bytes (None: unknown length), waiting at most `wait` seconds
        for room; the bytes charged, to `give` back once the request has let its body go."""
        if size is None or size <= SMALL:
            charge = size or 0
            self.used += charge
            return charge
        charge = min(size, self.capacity)
        if not self._waiters and self._fits(charge):
            self.used += charge
            return charge
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (charge, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(wait):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.give(charge)  # granted just as the wait ended
            else:
                self._waiters.remove(entry)
                self._admit()  # the next in line may fit now
            if isinstance(exc, TimeoutError):
                raise _busy(wait) from None
            raise
        return charge

    def give(self, charge: int) -> None:
        """Give back what `take` charged."""
        self.used -= charge
        self._admit()

    def _fits(self, charge: int) -> bool:
        return self.used == 0 or self.used + charge <= self.capacity

    def _admit(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            charge, granted = self._waiters.popleft()
            self.used += charge
            granted.set_result(None)


def _busy(wait: float) -> ProxyOutOfResources:
    return ProxyOutOfResources(
        f"The proxy is holding as many request bodies as its memory budget allows and this "
        f"one waited {wait:g} s for room. Retry shortly, or send fewer large requests at once.",
        headers={"Retry-After": "1"},
    )
