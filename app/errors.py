"""Every exception of the proxy, in one tree; nothing here imports the rest of the package.

    Exception
    ├── ProxyError                      500 server_error            answered to the client
    │   ├── InvalidRequest              400 invalid_request_error   bad JSON or fields
    │   ├── InvalidKey                  401 authentication_error    missing, unknown or revoked key
    │   ├── KeyExists                   409 invalid_request_error   `keys create` of a taken name
    │   ├── NotFound                    404 not_found_error         route or model id
    │   ├── Forbidden                   403 permission_error        the key may not do this
    │   │   ├── ModelNotAllowed             model_not_allowed       outside the key's patterns
    │   │   └── WouldCost                   would_cost              priced, for a free-only key
    │   ├── PayloadTooLarge             413 invalid_request_error
    │   ├── RateLimited                 429 rate_limit_error        every candidate cooling
    │   │   └── QuotaExceeded               quota_exceeded          a key's rpm/rpd/tpd/concurrency
    │   ├── UpstreamKeyMissing          503 server_error            no OPENROUTER_API_KEY
    │   ├── HeadersTooLarge             431 invalid_request_error   request head over the cap
    │   ├── ProxyOutOfResources         503 server_error            local EMFILE / ENOMEM
    │   ├── DatabaseUnavailable         503 server_error            keys database locked or gone
    │   ├── RedisUnavailable            503 server_error            PROXY_REDIS_FAIL=closed
    │   ├── ServerStopping              503 server_error            SIGTERM ended an open stream
    │   └── UpstreamError               502 upstream_error          one attempt failed
    │       ├── UpstreamUnreachable     502                         connect refused, DNS, TLS
    │       ├── UpstreamTimeout         504 timeout                 a per-attempt deadline
    │       ├── UpstreamBroken          502                         200 with no usable answer
    │       └── UpstreamRejected        upstream's own status       an OpenRouter error body
    ├── ClientGone                                                  the client left (logged 499)
    ├── ConfigError                                                 a bad setting, at start-up
    └── DatabaseError                                               the keys database, in a command

Each API renders a ProxyError in its own shape (`api/render.py` for OpenAI's, the Messages
dialect for Anthropic's). `upstream/client.py` and `upstream/answers.py` are the only
places that turn transport failures and upstream bodies into the Upstream* classes, and
`routing/policy.py` classifies them for fallback.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status_code = 500
    type = "server_error"
    code = "internal_error"
    # Upstream attempts the request made before this error (set by the fallback walk;
    # X-Proxy-Attempts), carried on the error as httpx carries `exc.request`.
    attempts = 0

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


class NotFound(ProxyError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


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


class QuotaExceeded(RateLimited):
    """A key's own limit (DESIGN §7), refused before any upstream call; nothing was counted."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: float, limit: str, key_name: str) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.key_name = key_name


class UpstreamKeyMissing(ProxyError):
    status_code = 503
    type = "server_error"
    code = "upstream_key_missing"


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


class ServerStopping(ProxyError):
    """The server's grace period ended while a stream was still open (SIGTERM)."""

    status_code = 503
    type = "server_error"
    code = "server_shutting_down"


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

    `status` is the HTTP status, or `error.code` for an error carried by a 200 (§4.1);
    `upstream_headers` are all of upstream's (the policy reads its reset hints), `headers`
    the few relayed to the client (`upstream.answers` picks them).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        upstream_headers: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
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


class ClientGone(Exception):
    """The client left while its request waited; nobody is left to answer."""


class ConfigError(Exception):
    """A setting is invalid; the message is the one line printed at start-up."""


class DatabaseError(Exception):
    """The database cannot be used; the message is one line naming the file and the fix."""
