"""Response cache (DESIGN §8): canonical key and eligibility, a size-bounded store,
single-flight for identical concurrent misses, and replay of stored answers.

The pipeline calls it as: `eligibility` → `cache_key` → `store.get` (hit: `render_hit`) →
`flights.join` (follower: the leader's entry is a hit, its failure the follower's error) →
the attempts → on a clean answer `is_storable` / `StreamAssembler` / `StreamRecorder` →
`store.put` → `lease.finish`; on an error `lease.fail`. What each API may keep, and how
its streams are kept and replayed, the cache asks the request's dialect
(`Dialect.storable`, `Dialect.keeping`): it names no route.
"""
