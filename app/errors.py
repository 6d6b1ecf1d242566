"""One error hierarchy; every failure a client sees is rendered here, OpenAI-shaped.

    ProxyError                      500 server_error
    ├── InvalidRequest              400 invalid_request_error   bad JSON or fields
    ├── InvalidKey                  401 authentication_error    missing, unknown or revoked key
    ├── KeyExists                   409 invalid_request_error   `keys create` of a taken name
    ├── NotFound                    404 not_found_error         route or model id
    ├── Forbidden                   403 permission_error        the key may not do this
    │   ├── ModelNotAllowed             model_not_allowed       outside the key's patterns
    │   └── WouldCost                   would_cost              priced, for a free-only key
    ├── PayloadTooLarge             413 invalid_request_error
    ├── RateLimited                 429 rate_limit_error        every candidate cooling
    │   └── QuotaExceeded               quota_exceeded          a key's rpm/rpd/tpd/concurrency
    ├── UpstreamKeyMissing          503 server_error            no OPENROUTER_API_KEY
    ├── HeadersTooLarge             431 invalid_request_error   request head over the cap
    ├── ProxyOutOfResources         503 server_error            local EMFILE / ENOMEM
    ├── DatabaseUnavailable         503 server_error            keys database locked or gone
    ├── ServerStopping              503 server_error            SIGTERM ended an open stream
    └── UpstreamError               502 upstream_error          one attempt failed
        ├── UpstreamUnreachable     502                         connect refused, DNS, TLS
        ├── UpstreamTimeout         504 timeout                 a per-attempt deadline
        ├── UpstreamBroken          502                         200 with no usable answer
        └── UpstreamRejected        upstream's own status       an OpenRouter error body

Upstream failures are classified for fallback in `fallback.py`; `upstream.py` is the only
place that turns httpx exceptions and upstream bodies into these classes.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.server.header_text import header_safe


class ProxyError(Exception):
    status_code = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        return {"error": error}


class InvalidRequest(ProxyError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class NotFound(ProxyError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class PayloadTooLarge(ProxyError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ProxyError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"retry-after": str(seconds)})
        self.retry_after = seconds


class UpstreamKeyMissing(ProxyError):
    status_code = 503
    type = "server_error"
    code = "upstream_key_missing"


class UpstreamError(ProxyError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_failed"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamBroken(UpstreamError):
    code = "upstream_bad_response"


# Upstream headers a client needs to act on a relayed error (openrouter-api.md §8).
_RELAYED_HEADERS = {
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
}

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _client_status(status: int) -> int:
    """Upstream 4xx are the client's to see; upstream 5xx mean "upstream failed" (502), and
    its timeouts (408, 524) "upstream timed out" (504), as DESIGN §4 defines them."""
    if status in (408, 524):
        return 504
    if 400 <= status < 500:
        return status
    return 502


class UpstreamRejected(UpstreamError):
    """OpenRouter answered with an error: an HTTP error status, or an error inside a 200.

    `status` is the HTTP status, or `error.code` for an error carried by a 200 (§4.1).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        upstream_headers: dict[str, str] | None = None,
    ) -> None:
        # Lower-case names: the same header echoed in the body and sent for real, or set
        # again by the proxy (`retry-after`), must reach the client once.
        relayed = {
            k.lower(): v
            for k, v in (upstream_headers or {}).items()
            if k.lower() in _RELAYED_HEADERS
        }
        super().__init__(message, headers=header_safe(relayed))
        self.status = status
        self.metadata = metadata or {}
        self.upstream_headers = {k.lower(): v for k, v in (upstream_headers or {}).items()}
        self.status_code = _client_status(status)
        self.type = _TYPES_BY_STATUS.get(status, "upstream_error")
        self.code = str(self.metadata.get("error_type") or status)

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.metadata:
            body["error"]["metadata"] = self.metadata
        return body


def error_response(exc: ProxyError) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error OpenAI-shaped, including Starlette's own 404/405."""

    async def proxy_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(
                NotFound(
                    "Unknown route. The proxy serves /v1/chat/completions, /v1/responses, "
                    "/v1/messages, /v1/embeddings, /v1/completions and /v1/models."
                )
            )
        error = ProxyError(str(exc.detail))
        error.status_code = exc.status_code
        error.type = "invalid_request_error"
        error.code = "method_not_allowed" if exc.status_code == 405 else str(exc.status_code)
        error.headers = dict(exc.headers or {})
        return error_response(error)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = str(first.get("msg", "invalid request"))
        # The field in the message too, as OpenAI's own 400s name it ("rpm: Input should …").
        return error_response(
            InvalidRequest(f"{param}: {message}" if param else message, param=param)
        )

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class QuotaExceeded(RateLimited):
    """A key's own limit (DESIGN §7), refused before any upstream call; nothing was counted."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: float, limit: str, key_name: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.key_name = key_name


class Forbidden(ProxyError):
    """Not for this caller: a browser page or a foreign `Host` (DESIGN §5), or a key's
    model patterns and free-only guarantee (DESIGN §7)."""

    status_code = 403
    type = "permission_error"
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


class WouldCost(Forbidden):
    """A free-only key asked for something the account would pay for (DESIGN §7)."""

    code = "would_cost"


class InvalidKey(ProxyError):
    """A /v1 request without a valid client key, once keys exist (DESIGN §7)."""

    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class KeyExists(ProxyError):
    """A client key of that name already exists (revoked ones included: names are not reused)."""

    status_code = 409
    type = "invalid_request_error"
    code = "key_exists"


class ServerStopping(ProxyError):
    """The server's grace period ended while a stream was still open (SIGTERM)."""

    status_code = 503
    type = "server_error"
    code = "server_shutting_down"


class HeadersTooLarge(ProxyError):
    status_code = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


class ProxyOutOfResources(ProxyError):
    """The proxy itself ran out of file descriptors or memory: no model is to blame, so
    nothing is cooled and the walk stops (DESIGN §6)."""

    status_code = 503
    type = "server_error"
    code = "proxy_out_of_resources"


class DatabaseUnavailable(ProxyError):
    """The keys and usage database cannot be used now: locked by another process, or
    deleted or replaced while serving (DESIGN §7). The message names the file."""

    status_code = 503
    type = "server_error"
    code = "database_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"retry-after": "1"})


class RedisUnavailable(ProxyError):
    """PROXY_REDIS_FAIL=closed while Redis is unreachable: no inference request is served
    (DESIGN §12)."""

    status_code = 503
    code = "redis_unavailable"
