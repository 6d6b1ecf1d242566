"""A cache hit's HTTP response, its header bytes encoded here rather than by Starlette.

A hit has no upstream call to wait for, so fixed per-response costs weigh on it most (issue
28): Starlette's `Response` lower-cases and encodes each of a hit's ~15 headers on every
response, then scans them for `content-length` and `content-type`. The names a hit carries
are the same few on every request (the proxy's own, the `x-ratelimit-*` ones, the stored
answer's), so each name's bytes are kept once. The bytes sent are exactly Starlette's: the
names lower-cased, the values as latin-1, `content-length` and `content-type` after them
unless given, `; charset=utf-8` on a `text/` type.
"""

from __future__ import annotations

from starlette.responses import Response

_NAMES: dict[str, bytes] = {}  # a header name -> its lower-cased bytes
_MAX_NAMES = 256  # a bound, should a stored answer bring names never seen again


def replayed(body: bytes, media_type: str, headers: dict[str, str]) -> Response:
    """A 200 carrying `body` as `media_type`, with `headers` (the proxy's, the answer's)."""
    names_seen = _NAMES
    raw = [
        (names_seen.get(name) or _name(name), value.encode("latin-1"))
        for name, value in headers.items()
    ]
    names = {name for name, _ in raw}
    if b"content-length" not in names:
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
    if b"content-type" not in names:
        if media_type.startswith("text/") and "charset=" not in media_type.lower():
            media_type += "; charset=utf-8"
        raw.append((b"content-type", media_type.encode("latin-1")))
    response = Response.__new__(Response)
    response.status_code = 200
    response.background = None
    response.body = body
    response.raw_headers = raw
    return response


def _name(name: str) -> bytes:
    """A name not seen before, kept while the bound allows."""
    encoded = name.lower().encode("latin-1")
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[name] = encoded
    return encoded
