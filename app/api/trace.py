"""What one request did, gathered as it goes and written once at its end: the log line
(DESIGN §11) and the usage record (DESIGN §7), with the same fields, so the two agree.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.metrics import Metrics
from app.request import Usage
from app.request_log import log, log_request
from app.status.activity import Activity
from app.team.usage import UsageRecord, UsageWriter

NOTHING_SPENT = Usage()  # frozen: one for every request that reported no usage


@dataclass(slots=True)
class Trace:
    id: str
    route: str
    started: float  # monotonic, for latency
    arrived: float  # wall clock, for the usage record
    key: str | None = None
    model: str | None = None
    served: str | None = None
    attempts: int = 0
    stream: bool = False
    cache: str = "BYPASS"
    usage: Usage | None = None
    ttft_ms: float | None = None
    upstream_ms: float | None = None  # the last (on success: the answering) attempt
    answered_ms: float | None = None  # when the first byte went to the client
    metrics: Metrics | None = None
    activity: Activity | None = None  # the status page's recent activity (DESIGN §13)
    recorded: bool = True  # False: logged, but no usage record (count_tokens, DESIGN §4)
    written: bool = False

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def first_content(self) -> None:
        self.ttft_ms = self.answered_ms = self.elapsed_ms()

    def server_timing(self) -> str:
        """`Server-Timing` (DESIGN §11): the proxy's own time before the first byte to the
        client, and the upstream attempt's, so any client can check the proxy's cost."""
        if self.answered_ms is None:
            self.answered_ms = self.elapsed_ms()
        if self.upstream_ms is None:
            return f"proxy;dur={self.answered_ms:.1f}"
        proxy = max(self.answered_ms - self.upstream_ms, 0.0)
        return f"proxy;dur={proxy:.1f}, upstream;dur={self.upstream_ms:.1f}"

    def finish(self, usage: UsageWriter, status: int, *, error: str | None = None) -> None:
        """Log the request's one line and queue its usage record; later calls do nothing."""
        if self.written:
            return
        self.written = True
        latency = self.elapsed_ms()
        if self.answered_ms is None:
            self.answered_ms = latency  # a non-stream answer goes out right after
        spent = self.usage or NOTHING_SPENT
        self._observed(status, error, latency)
        if log.isEnabledFor(logging.INFO):  # the fields are not gathered for nobody
            self._log(status, spent, error, latency)
        if self.recorded:
            usage.record(self._record(status, spent, latency))

    def _log(self, status: int, spent: Usage, error: str | None, latency: float) -> None:
        log_request(
            id=self.id,
            key=self.key,
            route=self.route,
            model=self.model,
            served=self.served,
            attempts=self.attempts or None,
            status=status,
            stream=self.stream,
            cache=self.cache,
            prompt_tokens=spent.prompt_tokens or None,
            completion_tokens=spent.completion_tokens or None,
            tokens_estimated=spent.estimated or None,
            error=error,
            ms=int(latency),
        )

    def _observed(self, status: int, error: str | None, latency: float) -> None:
        """The metrics and the status page's activity; overhead only where something
        answered."""
        assert self.answered_ms is not None
        overhead = self.answered_ms - (self.upstream_ms or 0.0) if self.served is not None else None
        if self.metrics is not None:
            self.metrics.request(
                self.route, status, self.served, self.cache, latency, self.ttft_ms, overhead
            )
        if self.activity is not None:
            self.activity.finished(
                key=self.key,
                route=self.route,
                model=self.model,
                served=self.served,
                status=status,
                error=error,
                latency_ms=latency,
                overhead_ms=overhead,
            )

    def _record(self, status: int, spent: Usage, latency: float) -> UsageRecord:
        """The usage record; a cache hit spent no tokens and cost nothing."""
        hit = self.cache == "HIT"
        return UsageRecord(
            time=self.arrived,
            key=self.key,
            route=self.route,
            requested_model=self.model,
            served_model=self.served,
            attempts=self.attempts,
            status=status,
            stream=self.stream,
            cache=self.cache.lower(),  # type: ignore[arg-type]
            prompt_tokens=0 if hit else spent.prompt_tokens,
            completion_tokens=0 if hit else spent.completion_tokens,
            cost=0.0 if hit else spent.cost,
            latency_ms=latency,
            ttft_ms=self.ttft_ms,
            estimated=spent.estimated and not hit,
        )
