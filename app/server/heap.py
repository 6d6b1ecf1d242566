"""The garbage collector set for a long-running server, once its start-up is done.

Everything built at start-up (imports, settings, the app, the catalogue) lives as long as
the process, yet CPython's collector walks it again in every full collection: with the
proxy's ~300,000 start-up objects one full collection took ~100 ms, several times a
minute under load, a pause on every request in flight and ~4 % of the CPU per request
(bench/README.md, "Profile"). `gc.freeze()` moves them out of the collector's sight; a
larger first threshold lets a burst of short-lived request objects go without a
collection each 700 allocations.
"""

from __future__ import annotations

import gc

# Young objects before a collection (CPython: 700), and the two older generations' counts.
THRESHOLDS = (10_000, 10, 10)


def settle() -> None:
    """Collect once, freeze what survives start-up, and raise the young threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
