"""POST /v1/chat/completions: parse, route, attempt, relay (STYLE §3's data flow)."""

from __future__ import annotations

import secrets
import time
from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.attempts import ClientGone, Served
from app.chat_request import ChatRequest, parse_chat_request, read_body
from app.deps import services_of
from app.errors import ProxyError, UpstreamKeyMissing
from app.header_text import header_escaped
from app.request_log import log_request
from app.streaming import EventStreamResponse, StreamOutcome, relay
from app.upstream import Answer, Call, OpenedStream

router = APIRouter(tags=["chat"])

# Client headers that shape the upstream request (DESIGN §5); nothing else is forwarded.
_CLIENT_ATTRIBUTION = ("http-referer", "x-title", "x-openrouter-title")


async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, streaming or not, answered by the first usable candidate."""
    started = time.monotonic()
    services = services_of(request)
    request_id = request_id_for(request)
    try:
        body = await read_body(request, services.settings.max_body_bytes)
        chat = parse_chat_request(body, services.settings.default_model)
        # Auth, quota and cache steps join the pipeline here, in that order.
        if services.settings.upstream_key is None:
            raise UpstreamKeyMissing(
                "OPENROUTER_API_KEY is not set on the proxy; set it and restart. See GET /readyz."
            )
        candidates = await services.router.candidates(chat)
        attribution = {h: v for h in _CLIENT_ATTRIBUTION if (v := request.headers.get(h))}
        call = Call(chat, attribution, request_id)
        if chat.stream:
            opened = await services.attempts.first_success(
                candidates, partial(services.upstream.open_stream, call), request.is_disconnected
            )
            return _stream_response(chat, opened, request_id, started)
        answer = await services.attempts.first_success(
            candidates, partial(services.upstream.complete, call), request.is_disconnected
        )
    except ClientGone:
        return Response(status_code=499)
    except ProxyError as error:
        error.headers["X-Request-Id"] = request_id
        log_request(
            id=request_id,
            status=error.status_code,
            attempts=error.headers.get("X-Proxy-Attempts"),
            error=error.code,
            ms=_ms(started),
        )
        raise
    log_request(
        id=request_id,
        model=chat.model,
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


# A plain Starlette route: FastAPI's dependency solving and body handling cost ~10 % of the
# hot path's CPU, and this handler reads its body itself (bench/README.md, "Profile").
router.add_route("/v1/chat/completions", chat_completions, methods=["POST"])


def _stream_response(
    chat: ChatRequest, opened: Served[OpenedStream], request_id: str, started: float
) -> Response:
    def finished(outcome: StreamOutcome) -> None:
        log_request(
            id=request_id,
            model=chat.model,
            served=opened.model,
            status=200,
            attempts=opened.attempts,
            stream=True,
            done=outcome.done,
            cancelled=outcome.cancelled or None,
            error=(outcome.error or {}).get("message"),
            ms=_ms(started),
        )

    return EventStreamResponse(
        relay(opened.result, finished), headers=_served_headers(opened, request_id)
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


def request_id_for(request: Request) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isprintable() and " " not in given:
        return given
    return secrets.token_hex(12)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
