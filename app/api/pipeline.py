"""The one request pipeline every inference route runs (DESIGN §1, STYLE §3):

    parse → auth → quota → cache → candidates → attempts with fallback → relay → usage, log

A route only names its dialect; what differs between APIs lives there, so each step below
is written once for every route.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.routing.attempts import ClientGone, Served
from app.config import MIB
from app.deps import Services, services_of
from app.server.disconnect import cancelled_when_gone
from app.errors import PayloadTooLarge, ProxyError, UpstreamKeyMissing
from app.server.header_text import header_escaped
from app.request import Dialect, ParsedRequest
from app.request_log import log_request
from app.upstream.relay import EventStreamResponse, StreamOutcome, relay
from app.upstream.client import Answer, Call, OpenedStream

Endpoint = Callable[[Request], Awaitable[Response]]

# Client headers that go up as sent (DESIGN §5): attribution, OpenRouter's opt-ins, and
# Anthropic's version headers. Nothing else a client sends is forwarded.
FORWARDED = (
    "http-referer",
    "x-title",
    "x-openrouter-title",
    "x-session-id",
    "x-openrouter-metadata",
    "x-openrouter-categories",
    "anthropic-version",
    "anthropic-beta",
)
# OpenRouter's response cache is per OpenRouter key: behind the shared key it would be
# shared by the whole team, so a client may ask for it only in open mode (DESIGN §5).
OPENROUTER_CACHE = ("x-openrouter-cache", "x-openrouter-cache-ttl", "x-openrouter-cache-clear")


def endpoint(dialect: Dialect) -> Endpoint:
    """A Starlette endpoint serving `dialect`'s route through the pipeline."""
    return partial(serve, dialect=dialect)


async def serve(request: Request, dialect: Dialect) -> Response:
    started = time.monotonic()
    services = services_of(request)
    request_id = request_id_for(request)
    parsed: ParsedRequest | None = None
    try:
        try:
            raw = await read_body(request, services.settings.max_body_bytes)
        except ClientDisconnect:
            raise ClientGone from None  # the upload was cut mid-body
        parsed = dialect.parse(raw, services.settings.default_model)
        # Auth, quota and cache steps join here, in that order, for every route.
        if services.settings.upstream_key is None:
            raise UpstreamKeyMissing(
                "OPENROUTER_API_KEY is not set on the proxy; set it and restart. See GET /readyz."
            )
        candidates = await _candidates(services, parsed)
        call = Call(parsed, forwarded_headers(request, open_mode=True), request_id)
        async with cancelled_when_gone(request.receive):
            if parsed.stream:
                opened = await services.attempts.first_success(
                    candidates,
                    partial(services.upstream.open_stream, call),
                    request.is_disconnected,
                )
                return _stream_response(parsed, opened, request_id, started, services)
            answer = await services.attempts.first_success(
                candidates, partial(services.upstream.complete, call), request.is_disconnected
            )
    except ClientGone:
        log_request(
            id=request_id, route=dialect.name, status=499, error="client_gone", ms=_ms(started)
        )
        return Response(status_code=499)
    except ProxyError as error:
        error.headers["X-Request-Id"] = request_id
        log_request(
            id=request_id,
            route=dialect.name,
            model=parsed.model if parsed else None,
            status=error.status_code,
            attempts=error.headers.get("X-Proxy-Attempts"),
            error=error.code,
            ms=_ms(started),
        )
        return dialect.error_response(error)
    log_request(
        id=request_id,
        route=dialect.name,
        model=parsed.model,
        served=answer.model,
        status=200,
        attempts=answer.attempts,
        stream=False,
        ms=_ms(started),
    )
    return Response(
        answer.result.body,
        media_type="application/json",
        headers=_served_headers(answer, request_id),
    )


async def _candidates(services: Services, parsed: ParsedRequest) -> list[str]:
    if not parsed.dialect.falls_back:
        return [parsed.model]  # only the named model (embeddings)
    return await services.router.candidates(parsed)


def _stream_response(
    parsed: ParsedRequest,
    opened: Served[OpenedStream],
    request_id: str,
    started: float,
    services: Services,
) -> Response:
    def finished(outcome: StreamOutcome) -> None:
        log_request(
            id=request_id,
            route=parsed.dialect.name,
            model=parsed.model,
            served=opened.model,
            status=499 if outcome.cancelled else 200,
            attempts=opened.attempts,
            stream=True,
            done=outcome.done,
            error=(outcome.error or {}).get("message"),
            ms=_ms(started),
        )

    options = parsed.data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return EventStreamResponse(
        relay(
            opened.result,
            parsed.dialect,
            finished,
            include_usage=include_usage,
            streams=services.streams,
        ),
        headers=_served_headers(opened, request_id),
    )


def _served_headers(
    served: Served[Answer] | Served[OpenedStream], request_id: str
) -> dict[str, str]:
    return {
        **served.result.headers,
        "X-Proxy-Model": header_escaped(served.model),
        "X-Proxy-Attempts": str(served.attempts),
        "X-Request-Id": request_id,
    }


def forwarded_headers(request: Request, *, open_mode: bool) -> dict[str, str]:
    """The client headers that go up, as the client's bytes (DESIGN §5).

    Starlette decodes header bytes as latin-1 and aiohttp encodes values as UTF-8, so a
    value is turned back into its bytes and read as UTF-8; a value that is not valid
    UTF-8 is dropped rather than sent double-encoded.
    """
    names = FORWARDED + OPENROUTER_CACHE if open_mode else FORWARDED
    forwarded: dict[str, str] = {}
    for name in names:
        value = request.headers.get(name)
        if value is None:
            continue
        try:
            forwarded[name] = value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            continue
    return forwarded


def request_id_for(request: Request) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return secrets.token_hex(12)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than PROXY_MAX_BODY_MB ({limit / MIB:g} MiB). "
        "Send a smaller request or raise the limit."
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
