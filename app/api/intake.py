"""What the pipeline reads from a request before its steps (DESIGN §4, §5): the few client
headers any step needs, in one pass; the ones that go up as sent; the request's id; and
its body, refused with 413 as soon as it passes the limit.
"""

from __future__ import annotations

import itertools
import secrets

from starlette.requests import ClientDisconnect, Request

from app.config import MIB
from app.errors import PayloadTooLarge

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
# shared by the whole team, so a client may ask for it only in open mode or with
# PROXY_CACHE_SCOPE=global (DESIGN §5).
OPENROUTER_CACHE = ("x-openrouter-cache", "x-openrouter-cache-ttl", "x-openrouter-cache-clear")
_FORWARDED = frozenset(FORWARDED)
_FORWARDED_WITH_CACHE = frozenset(FORWARDED + OPENROUTER_CACHE)
# Every client header a pipeline step reads, gathered in one pass over the request's
# headers: Starlette's `headers.get` scans them all on each call.
_READ = frozenset(
    name.encode()
    for name in (
        *FORWARDED,
        *OPENROUTER_CACHE,
        "authorization",
        "x-api-key",
        "x-request-id",
        "cache-control",
        "content-length",
    )
)
# Request ids: a random prefix per process and a counter, unique across replicas and far
# cheaper than a fresh random token per request.
_ID_PREFIX = secrets.token_hex(6)
_ID_SERIAL = itertools.count(1)


def read_headers(request: Request) -> dict[str, str]:
    """The client headers the pipeline reads, by lower-case name (the first of repeats)."""
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        if name in _READ:
            found.setdefault(name.decode(), value.decode("latin-1"))
    return found


def forwarded_headers(headers: dict[str, str], *, openrouter_cache: bool) -> dict[str, str]:
    """The client headers that go up, as the client's bytes (DESIGN §5).

    Starlette decodes header bytes as latin-1 and aiohttp encodes values as UTF-8, so a
    value is turned back into its bytes and read as UTF-8; a value that is not valid
    UTF-8 is dropped rather than sent double-encoded.
    """
    names = _FORWARDED_WITH_CACHE if openrouter_cache else _FORWARDED
    forwarded: dict[str, str] = {}
    for name, value in headers.items():  # the few the request had, not every name we know
        if name not in names:
            continue
        try:
            forwarded[name] = value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            continue
    return forwarded


def request_id_for(headers: dict[str, str]) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = headers.get("x-request-id")
    if given and len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return f"{_ID_PREFIX}{next(_ID_SERIAL):012x}"


def declared_length(headers: dict[str, str], limit: int) -> int | None:
    """The body's declared Content-Length (None: not declared), refused with 413 at once
    when it passes `limit` bytes, before the request waits for room (`body_budget.py`)."""
    declared = headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    size = int(declared)
    if size > limit:
        raise _too_large(limit)
    return size


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes; a client gone
    mid-body is `ClientDisconnect`, as Starlette's `Request.stream` says it. Read from the
    ASGI `receive` itself: the async generator behind `Request.stream` costs more than the
    read on a request whose body arrives in one message, nearly every one."""
    receive = request.receive
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnect()
        if kind != "http.request":
            continue
        part = message.get("body", b"")
        if part:
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than PROXY_MAX_BODY_MB ({limit / MIB:g} MiB). "
        "Send a smaller request or raise the limit."
    )
