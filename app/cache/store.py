"""Where cached answers live: a small async protocol, and the in-process implementation.

`MemoryCache` is a cachetools `TTLCache` whose `maxsize` is the byte bound and whose
`getsizeof` is each entry's measured size, so cachetools evicts (least recently used first)
until the measured total fits: the bound holds by construction, not by sampling. A Redis
backend implements the same `CacheStore` protocol for several replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cachetools import TTLCache

# Bytes an entry costs beyond its body, headers and model text: the Entry object and its
# float, the bytes/str object headers, the 64-character key string, TTLCache's expiry link
# and two dict slots. Measured with tracemalloc on CPython 3.11: about 520 bytes per entry
# plus about 165 per header pair (a tuple and two str headers); rounded up by a quarter.
# tests/test_cache_store.py checks that the real memory growth stays under the bound.
ENTRY_OVERHEAD = 640
HEADER_OVERHEAD = 208


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored answer, as received from upstream (JSON, or the relayed SSE bytes)."""

    body: bytes
    stream: bool  # True: `body` is the SSE byte stream as relayed (Responses, Messages)
    model: str  # the model that answered (X-Proxy-Model on a hit)
    created: float  # wall-clock seconds when stored
    headers: tuple[tuple[str, str], ...] = field(default=())  # replayed, e.g. x-generation-id

    @property
    def size(self) -> int:
        """Measured bytes this entry holds in memory (the unit of PROXY_CACHE_MAX_MB)."""
        text = len(self.model) + sum(len(k) + len(v) for k, v in self.headers)
        return len(self.body) + text + ENTRY_OVERHEAD + HEADER_OVERHEAD * len(self.headers)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What /metrics exports: live entries, their measured bytes, lookups that hit or missed."""

    entries: int
    bytes: int
    hits: int
    misses: int


class CacheStore(Protocol):
    """A place for answers, shared or not; the pipeline knows nothing else about it."""

    def expect(self, key: str) -> None:
        """`get(key)` follows soon: a shared store sends it along with the request's
        admission, so the lookup costs no round trip of its own (DESIGN §12 "Cheap")."""

    async def get(self, key: str) -> Entry | None:
        """The live entry for `key`, counting one hit or one miss in the same step."""

    async def put(self, key: str, entry: Entry) -> bool:
        """Store `entry` in one step, evicting least recently used entries until the
        measured total fits the bound; False (nothing stored) when it alone exceeds it."""

    async def stats(self) -> CacheStats:
        """Live entries, their measured bytes, and the lookups counted so far."""


def _entry_size(entry: Entry) -> int:
    return entry.size


class MemoryCache:
    """In-process store bounded by measured bytes and by age (`ttl` seconds on `clock`)."""

    def __init__(
        self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._cache: TTLCache[str, Entry] = TTLCache(
            maxsize=self.max_bytes, ttl=ttl, timer=clock, getsizeof=_entry_size
        )
        self._hits = 0
        self._misses = 0

    @classmethod
    def from_mb(
        cls, max_mb: float, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> MemoryCache:
        """Built from the settings' units: PROXY_CACHE_MAX_MB (MiB) and PROXY_CACHE_TTL."""
        return cls(int(max_mb * 1024 * 1024), ttl, clock)

    def expect(self, key: str) -> None:
        """In memory a lookup is no round trip: nothing to send ahead."""

    async def get(self, key: str) -> Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            self._misses += 1
        else:
            self._hits += 1
        return entry

    async def put(self, key: str, entry: Entry) -> bool:
        """Store `entry`; False (nothing stored) when it alone exceeds the bound."""
        if entry.size > self.max_bytes:
            return False
        self._cache[key] = entry
        return True

    async def stats(self) -> CacheStats:
        self._cache.expire()
        return CacheStats(len(self._cache), int(self._cache.currsize), self._hits, self._misses)
