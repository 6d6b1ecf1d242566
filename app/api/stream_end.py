"""What a committed stream keeps until it ends (issue 28).

Once its first content has gone to the client no other attempt can follow, so the stream
needs nothing of the request any more: a thousand open streams of 200 KB prompts would
otherwise hold 200 MB of request bodies and as much again of parsed JSON, with the client's
headers beside them. A stream's end keeps only what it writes: the log line and usage
record (the trace, and the prompt's estimated tokens for a stream cut before its usage),
the key's tokens and concurrency lease (the admission), and the cache's use (the key's
hash and the stream's recording, never the body).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.api.trace import Trace
from app.cache.step import CacheUse
from app.deps import Services
from app.request import Dialect, Usage
from app.team.auth import Caller
from app.team.gate import Admission, Gate
from app.upstream.relay import StreamOutcome


@dataclass(slots=True)
class StreamEnd:
    """The relay's `on_finish`: usage, quota, cache and the log line once a stream ends."""

    services: Services
    trace: Trace
    cache: CacheUse
    admission: Admission
    dialect: Dialect
    model: str  # the answering model
    headers: dict[str, str]  # upstream's passed response headers, kept with a cached answer
    prompt_tokens: int  # the prompt's estimate, counted before the body was let go

    async def __call__(self, outcome: StreamOutcome) -> None:
        services, trace, cache = self.services, self.trace, self.cache
        trace.usage = outcome.spent(self.prompt_tokens)
        clean = outcome.done and outcome.error is None and not outcome.cancelled
        try:
            if clean:
                await services.cache.keep(cache, self.dialect, None, self.model, self.headers)
            cache.release()
            await spend_tokens(services.gate, self.admission.caller, trace.usage)
        finally:
            await self.admission.done()
            error = (outcome.error or {}).get("message")
            trace.finish(services.team.usage, 499 if outcome.cancelled else 200, error=error)


async def spend_tokens(gate: Gate, caller: Caller, usage: Usage | None) -> None:
    """A key's answered tokens count toward its `tpd` (DESIGN §7); open mode counts none."""
    if usage is not None and caller.key is not None:
        await gate.tokens(caller, usage.prompt_tokens + usage.completion_tokens)
