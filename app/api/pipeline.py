"""The one request pipeline every inference route runs (DESIGN §1, STYLE §3):

    parse → auth → quota → cache → candidates → attempts with fallback → relay → usage, log

A route only names its dialect; what differs between APIs lives there, so each step below
is written once for every route. `Flow` carries one request through the steps, and each
decision stays in the stage that owns it (team/, cache/, routing/, upstream/).

POST /v1/messages/count_tokens is the same pipeline as far as the gate (parse → auth → the
key's models), then counts instead of answering: it spends nothing, so it meets no quota,
cache or attempt and writes no usage record (DESIGN §4).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.api.disconnect import CancelledWhenGone
from app.api.intake import (
    declared_length,
    forwarded_headers,
    read_body,
    read_headers,
    request_id_for,
)
from app.api.replayed import replayed
from app.api.stream_end import StreamEnd, spend_tokens
from app.api.trace import Trace
from app.cache.step import NOT_USED, CacheUse
from app.deps import services_of
from app.errors import ClientGone, ProxyError, QuotaExceeded, UpstreamKeyMissing
from app.header_text import header_escaped
from app.request import Dialect, ParsedRequest
from app.request_log import REQUEST_ID
from app.routing.attempts import Attempt, Served
from app.team.auth import OPEN, Caller
from app.team.gate import Admission
from app.upstream.client import Answer, Call, OpenedStream
from app.upstream.relay import EventStreamResponse, relay

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def endpoint(dialect: Dialect, *, counting: bool = False) -> Endpoint:
    """A Starlette endpoint serving `dialect`'s route through the pipeline; `counting`: the
    route counts the request's tokens (count_tokens) instead of answering it."""
    return partial(serve, dialect=dialect, counting=counting)


async def serve(request: Request, dialect: Dialect, counting: bool = False) -> Response:
    return await Flow(request, dialect, counting).run()


class Flow:
    """One request on its way through the pipeline."""

    def __init__(self, request: Request, dialect: Dialect, counting: bool = False) -> None:
        self.request = request
        self.dialect = dialect
        self.counting = counting
        self.services = services = services_of(request)
        self.headers = headers = read_headers(request)
        self.trace = Trace(
            id=request_id_for(headers),
            route=request.scope["path"],
            started=time.monotonic(),
            arrived=services.clock(),
            metrics=services.metrics,
            activity=services.activity,
            recorded=not counting,
        )
        REQUEST_ID.set(self.trace.id)
        self.caller: Caller = OPEN
        self.admission: Admission | None = None
        self.cache: CacheUse = NOT_USED
        self.streaming = False  # the relay owns the ending from here on
        self.held = 0  # body bytes charged to the process's budget (app/body_budget.py)

    async def run(self) -> Response:
        try:
            try:
                return await self._steps()
            except ProxyError as error:
                self.cache.fail(error)  # requests following this one answer it too
                raise
            finally:
                # Committed or answered: the body and its JSON are let go (issue 28).
                self.services.body_budget.give(self.held)
                if not self.streaming:
                    self.cache.release()
                    if self.admission is not None:
                        await self.admission.done()
        except ClientGone:
            self.trace.finish(self.services.team.usage, 499, error="client_gone")
            return Response(status_code=499)
        except ProxyError as error:
            return self._error(error)

    async def _steps(self) -> Response:
        services, request, trace = self.services, self.request, self.trace
        limit = services.settings.max_body_bytes
        size = declared_length(self.headers, limit)
        self.held = await services.body_budget.take(size, services.settings.first_byte_timeout)
        try:
            raw = await read_body(request, limit)
        except ClientDisconnect:
            raise ClientGone from None  # the upload was cut mid-body
        parsed = self.dialect.parse(raw, services.settings.default_model)
        trace.model, trace.stream = parsed.model, parsed.stream
        headers = self.headers
        if not self.counting:  # a count is never cached
            self.cache = services.cache.status(parsed, headers.get("cache-control"))
            trace.cache = self.cache.status
        self.caller = await services.gate.authenticate(
            headers.get("authorization"), headers.get("x-api-key")
        )
        trace.key = self.caller.name
        # Which models this key may use is settled before its quotas count the request:
        # a refused request counts toward no limit (DESIGN §7).
        if services.failover is not None:
            services.failover.check()  # PROXY_REDIS_FAIL=closed with Redis away: 503
        candidates = await services.gate.allowed(self.caller, parsed, await self._named(parsed))
        if self.counting:
            return await self._count(parsed, candidates)
        services.attempts.expect(candidates)  # read along with the admission
        key = services.cache.expect(parsed, self.caller.name, self.cache)
        self.admission = await services.gate.admit(self.caller, parsed)
        self.cache = await self._lookup(parsed, len(candidates), key)
        trace.cache = self.cache.status
        if self.cache.hit is not None:
            return self._hit()
        if not services.upstream.keyed:
            raise UpstreamKeyMissing(
                "OPENROUTER_API_KEY is not set on the proxy; set it and restart. See GET /readyz."
            )
        call = Call(parsed, self._forwarded(), trace.id)
        spend = partial(services.gate.spend, self.caller)
        async with CancelledWhenGone(request.receive):
            if parsed.stream:
                opened = await services.attempts.first_success(
                    candidates,
                    self._timed(partial(services.upstream.open_stream, call)),
                    request.is_disconnected,
                    spend,
                )
                return self._stream(parsed, opened)
            answer = await services.attempts.first_success(
                candidates,
                self._timed(partial(services.upstream.complete, call)),
                request.is_disconnected,
                spend,
            )
        return await self._answer(parsed, answer)

    async def _lookup(self, parsed: ParsedRequest, candidates: int, key: str | None) -> CacheUse:
        """The cache's answer, or the flight this request leads or follows; a follower
        waits at most what its own walk over `candidates` could take."""
        services = self.services
        return await services.cache.lookup(
            parsed,
            self.caller.name,
            self.headers.get("cache-control"),
            may_serve=partial(services.gate.may_use, self.caller, parsed),
            wait=services.attempts.longest(candidates, services.settings.total_timeout),
            known=self.cache,
            key=key,
        )

    async def _named(self, parsed: ParsedRequest) -> list[str]:
        if not parsed.dialect.falls_back:
            return [parsed.model]  # only the named model (embeddings)
        return await self.services.router.candidates(parsed)

    def _timed(self, attempt: Attempt[T]) -> Attempt[T]:
        """`attempt`, timing each call into the trace: the last one is the answering one
        (a stream's attempt ends at its first content) or the last to fail."""
        trace = self.trace

        async def timed(model: str, *, last: bool) -> T:
            started = time.monotonic()
            try:
                return await attempt(model, last=last)
            finally:
                trace.upstream_ms = (time.monotonic() - started) * 1000

        return timed

    def _forwarded(self) -> dict[str, str]:
        shared_cache = self.caller.key is None or self.services.settings.cache_scope == "global"
        return forwarded_headers(self.headers, openrouter_cache=shared_cache)

    async def _count(self, parsed: ParsedRequest, candidates: list[str]) -> Response:
        """count_tokens, once the gate knows the caller and its models: for the first model
        it may use, counted by OpenRouter or estimated here. Nothing counts toward a quota."""
        services, trace = self.services, self.trace
        model = candidates[0] if candidates else None
        body, counted_by = await services.counter.count(parsed, model, trace.id)
        trace.served = counted_by
        trace.finish(services.team.usage, 200)  # the log line; `recorded` is off
        headers = await services.gate.ratelimit_headers(self.caller)
        headers.update(self._headers(counted_by, 1 if counted_by else 0))
        return Response(body, media_type="application/json", headers=headers)

    def _hit(self) -> Response:
        use, trace = self.cache, self.trace
        assert use.hit is not None and use.entry is not None
        trace.served = use.entry.model
        trace.finish(self.services.team.usage, 200)
        headers = {
            **dict(use.entry.headers),
            **self._headers(use.entry.model, 0),
        }
        if use.hit.media_type == "text/event-stream":
            headers["Cache-Control"] = "no-cache"
        return replayed(use.hit.body, use.hit.media_type, headers)

    async def _answer(self, parsed: ParsedRequest, answer: Served[Answer]) -> Response:
        result, trace = answer.result, self.trace
        trace.served, trace.attempts, trace.usage = answer.model, answer.attempts, result.usage
        await self.services.cache.keep(
            self.cache, parsed.dialect, result.body, answer.model, result.headers
        )
        await spend_tokens(self.services.gate, self.caller, trace.usage)
        trace.finish(self.services.team.usage, 200)
        headers = {**result.headers, **self._headers(answer.model, answer.attempts)}
        return Response(result.body, media_type="application/json", headers=headers)

    def _stream(self, parsed: ParsedRequest, opened: Served[OpenedStream]) -> Response:
        """The committed stream's response. What it keeps until it ends is a `StreamEnd`,
        never this flow: no other attempt can follow, so the request's body, its parsed
        JSON and the client's headers are let go here (issue 28)."""
        trace, admission = self.trace, self.admission
        assert admission is not None  # admitted before any attempt
        trace.served, trace.attempts = opened.model, opened.attempts
        trace.first_content()
        options = parsed.data.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.streaming = True
        stream = opened.result
        end = StreamEnd(
            self.services,
            trace,
            self.cache,
            admission,
            parsed.dialect,
            opened.model,
            stream.headers,
            prompt_tokens=parsed.needs.prompt_tokens,
        )
        return EventStreamResponse(
            relay(
                stream,
                parsed.dialect,
                end,
                include_usage=include_usage,
                streams=self.services.streams,
                tap=self.cache.tap if self.cache.recorder is not None else None,
            ),
            headers={**stream.headers, **self._headers(opened.model, opened.attempts)},
        )

    def _headers(self, model: str | None, attempts: int) -> dict[str, str]:
        """The proxy's own response headers (DESIGN §4), on answers and errors alike."""
        headers = dict(self.admission.headers) if self.admission is not None else {}
        if model is not None:
            headers["X-Proxy-Model"] = header_escaped(model)
        headers["X-Proxy-Attempts"] = str(attempts)
        headers["X-Cache"] = self.cache.status
        headers["X-Request-Id"] = self.trace.id
        headers["Server-Timing"] = self.trace.server_timing()
        return headers

    def _error(self, error: ProxyError) -> Response:
        self.trace.attempts = error.attempts
        for name, value in self._headers(None, self.trace.attempts).items():
            error.headers.setdefault(name, value)
        if isinstance(error, QuotaExceeded):
            self.services.metrics.quota_rejected(error.key_name, error.limit)
        self.trace.finish(self.services.team.usage, error.status_code, error=error.code)
        return self.dialect.error_response(error)
