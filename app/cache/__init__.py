"""Response cache (DESIGN §8): canonical key and eligibility, a size-bounded store,
single-flight for identical concurrent misses, and replay of stored answers.

The pipeline calls it as: `eligibility` → `cache_key` → `store.get` (hit: `render_hit`) →
`flights.join` (follower: the leader's entry is a hit, its failure the follower's error) →
the attempts → on a clean answer `is_storable` / `StreamAssembler` / `StreamRecorder` →
`store.put` → `ticket.finish`; on an error `ticket.fail`.
"""

from app.cache.flight import Flights, Ticket
from app.cache.key import BYPASS, Eligibility, cache_key, eligibility, scope_for
from app.cache.replay import (
    Replay,
    StreamAssembler,
    StreamRecorder,
    completion_to_sse,
    render_hit,
    replay_stored_stream,
)
from app.cache.storable import is_storable, is_storable_completion
from app.cache.store import CacheStats, CacheStore, Entry, MemoryCache

__all__ = [
    "BYPASS",
    "CacheStats",
    "CacheStore",
    "Eligibility",
    "Entry",
    "Flights",
    "MemoryCache",
    "Replay",
    "StreamAssembler",
    "StreamRecorder",
    "Ticket",
    "cache_key",
    "completion_to_sse",
    "eligibility",
    "is_storable",
    "is_storable_completion",
    "render_hit",
    "replay_stored_stream",
    "scope_for",
]
