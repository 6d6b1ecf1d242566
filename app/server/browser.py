"""Browsers and request heads, checked before anything else (DESIGN §5).

The proxy holds a key with credits and listens on localhost, which is what a malicious
page looks for: a `text/plain` POST needs no CORS preflight, and a DNS-rebinding page
(`Host: attacker.example`) can even read answers. So, in one pure ASGI middleware:

- a request whose `Origin` is not in PROXY_CORS_ORIGINS, or marked
  `Sec-Fetch-Site: cross-site` without an allowed origin, gets 403;
- a `Host` that is not a loopback name, the bind address, or in PROXY_ALLOWED_HOSTS gets
  403. Loopback names are `localhost`, `*.localhost` (browsers resolve them to loopback
  themselves), 127.0.0.0/8 and ::1. With a wildcard bind (0.0.0.0, ::) any IP literal is
  accepted too: the machine's own addresses cannot be listed cheaply, and an IP literal
  cannot be rebound (rebinding needs a DNS name the attacker controls). A port is ignored;
- allowed origins get CORS answers: preflight, `Access-Control-Allow-Origin` and exposed
  headers on every response, streams included;
- a request head larger than MAX_HEADER_BYTES gets 431 (see also `app/server/http_limits.py`).

Requests without `Origin` or `Sec-Fetch-Site` (curl, SDKs, servers) are unaffected.
Everything is precomputed: the hot path is a few set lookups.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.render import error_response
from app.config import Settings
from app.errors import Forbidden, HeadersTooLarge, ProxyError

# Total size of a request's header names and values (DESIGN §5); a few dozen KiB is
# generous: the largest real headers (cookies, JWTs) stay well below it.
MAX_HEADER_BYTES = 64 * 1024

# Response headers a trusted browser page may read (DESIGN §5), named one by one: a
# wildcard is not honoured everywhere.
EXPOSED_HEADERS = ", ".join(
    (
        "X-Proxy-Model",
        "X-Proxy-Attempts",
        "X-Cache",
        "X-Request-Id",
        "X-Generation-Id",
        "Retry-After",
        "Server-Timing",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
)
_ALLOWED_METHODS = b"GET, POST, OPTIONS"
_PREFLIGHT_MAX_AGE = b"600"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def _names(setting: str) -> tuple[frozenset[str], bool]:
    """A comma list as a set of lower-case names, and whether it is `*`."""
    names = frozenset(n.strip().lower().rstrip("/") for n in setting.split(",") if n.strip())
    return names, "*" in names


def host_name(host: str) -> str:
    """`Host` without its port, brackets or trailing dot, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


_SEEN_HOSTS = 256


class HostPolicy:
    """Which `Host` names the proxy answers to; cheap for the names it sees every time."""

    def __init__(self, bind_host: str, allowed_hosts: str) -> None:
        extra, self.any = _names(allowed_hosts)
        bind = host_name(bind_host)
        self.wildcard_bind = bind in _WILDCARD_BINDS
        self.names = _LOOPBACK_NAMES | extra | ({bind} - _WILDCARD_BINDS)
        # Every request carries the same few Host values: each is parsed once.
        self._seen: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        known = self._seen.get(host)
        if known is None:
            known = self._allows(host)
            if len(self._seen) < _SEEN_HOSTS:  # a flood of made-up names is not remembered
                self._seen[host] = known
        return known

    def _allows(self, host: str) -> bool:
        name = host_name(host)
        if name in self.names or name.endswith(".localhost"):
            return True
        address = _ip(name)
        return address is not None and (address.is_loopback or self.wildcard_bind)


class BrowserGuard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: streams pass through untouched)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.origins, self.any_origin = _names(settings.cors_origins)
        self.hosts = HostPolicy(settings.host, settings.allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = host = fetch_site = fetch_mode = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
            elif name == b"sec-fetch-site":
                fetch_site = value
            elif name == b"sec-fetch-mode":
                fetch_mode = value
        if (
            fetch_site == b"cross-site"
            and origin is None
            and _navigates_to_status(scope, fetch_mode)
        ):
            fetch_site = None  # a link to the status page from a wiki: it only shows the page
        same_origin = origin is not None and (
            fetch_site == b"same-origin" or (host is not None and _same_origin(scope, origin, host))
        )
        refusal = self._refusal(size, None if same_origin else origin, host, fetch_site)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        if origin is None or same_origin:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, origin, send)
            return
        await self.app(scope, receive, _with_cors(send, origin))

    def _refusal(
        self, size: int, origin: bytes | None, host: bytes | None, fetch_site: bytes | None
    ) -> ProxyError | None:
        if size > MAX_HEADER_BYTES:
            return HeadersTooLarge(
                f"The request's headers total {size} bytes; the proxy accepts at most "
                f"{MAX_HEADER_BYTES}."
            )
        if host is not None and not self.hosts.allows(host.decode("latin-1")):
            return Forbidden(
                "This proxy answers only to loopback names and its bind address (protection "
                "against DNS rebinding). To reach it under another name, add that name to "
                "PROXY_ALLOWED_HOSTS."
            )
        if origin is not None:
            if not self.origin_allowed(origin):
                return Forbidden(
                    "Browser requests from this origin are refused, so that no web page can "
                    "spend the proxy's OpenRouter key. To allow a page you trust, add its "
                    "origin to PROXY_CORS_ORIGINS."
                )
        elif fetch_site == b"cross-site":
            return Forbidden(
                "Cross-site browser requests are refused, so that no web page can spend the "
                "proxy's OpenRouter key. To allow a page you trust, add its origin to "
                "PROXY_CORS_ORIGINS."
            )
        return None

    def origin_allowed(self, origin: bytes) -> bool:
        return self.any_origin or origin.decode("latin-1").lower().rstrip("/") in self.origins

    async def _preflight(self, scope: Scope, origin: bytes, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", _ALLOWED_METHODS),
            (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        requested = _header(scope, b"access-control-request-headers")
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


_EXPOSED = EXPOSED_HEADERS.encode()


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", ()),
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", _EXPOSED),
                (b"vary", b"Origin"),
            ]
        await send(message)

    return send_with_cors


# Pages a top-level navigation from another site may open (DESIGN §13): GET only, and they
# show the login form or the page, never change anything.
_NAVIGABLE = frozenset({"/", "/status"})


def _navigates_to_status(scope: Scope, fetch_mode: bytes | None) -> bool:
    return fetch_mode == b"navigate" and scope["method"] == "GET" and scope["path"] in _NAVIGABLE


def _same_origin(scope: Scope, origin: bytes, host: bytes) -> bool:
    """The request comes from a page this server served (the status page's own forms and
    event stream): its `Origin` is this request's scheme and `Host`, or the browser marks it
    `Sec-Fetch-Site: same-origin` (with `Referrer-Policy: no-referrer` a form's POST carries
    `Origin: null`). The `Host` is checked against the allowed names as always, so a
    rebinding name gains nothing."""
    scheme = scope.get("scheme", "http")
    return origin.lower() == f"{scheme}://".encode() + host.lower()


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None
