"""What may be written as a response header value: uvicorn refuses control characters
(the whole response is lost), and Starlette encodes values as latin-1, so a non-ASCII
value from upstream (aiohttp decodes header bytes as UTF-8) can fail too. Relayed values
that are not plain visible ASCII are dropped; ids we must send are escaped.
"""

from __future__ import annotations

from urllib.parse import quote

# Characters model ids use, kept as they are when an id has to be escaped.
_ID_SAFE = "/:@.-_~+=,"


def is_header_text(value: str) -> bool:
    """Visible ASCII and spaces only; two C-level checks on the hot path."""
    return value.isascii() and value.isprintable()


def header_safe(headers: dict[str, str]) -> dict[str, str]:
    """`headers` minus any value that cannot be sent as it is (DESIGN §5: dropped, never a
    500)."""
    if all(is_header_text(v) for v in headers.values()):
        return headers
    return {k: v for k, v in headers.items() if is_header_text(v)}


def header_escaped(value: str) -> str:
    """`value` itself when it is header text, else percent-encoded (UTF-8), so that an odd
    model id never costs the response it names."""
    return value if is_header_text(value) else quote(value, safe=_ID_SAFE)
