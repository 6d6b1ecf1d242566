"""Secrets never leave in upstream text (DESIGN §5).

OpenRouter and its providers sometimes echo the request, `Authorization` header included,
in an error message or `metadata.raw`. Everything from upstream that the proxy relays or
logs passes through one `Redactor`, which replaces the upstream key and every proxy key
by `[redacted]`. The fast path is one substring test per secret: most text holds none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from app.errors import ProxyError, UpstreamRejected

REDACTED = "[redacted]"
# Shorter strings are not secrets worth the cost (and could match ordinary words).
_MIN_SECRET = 8

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._encoded: tuple[bytes, ...] = ()  # the same, as UTF-8: checked on every block
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Also redact `secret` from now on (e.g. a client key created at run time)."""
        if not secret or len(secret) < _MIN_SECRET or secret in self._secrets:
            return
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = tuple(sorted((*self._secrets, secret), key=len, reverse=True))
        self._encoded = tuple(s.encode() for s in self._secrets)

    def text(self, text: str) -> str:
        if not any(secret in text for secret in self._secrets):
            return text
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def bytes(self, data: bytes) -> bytes:
        """Raw bytes (an SSE event relayed as received): compared as UTF-8."""
        for secret in self._encoded:  # a plain loop: this runs on every relayed chunk
            if secret in data:
                break
        else:
            return data
        for secret in self._encoded:
            data = data.replace(secret, REDACTED.encode())
        return data

    def value(self, value: T) -> T:
        """Every string inside a JSON-like value (metadata, an error object), recursively."""
        if not self._secrets:
            return value
        return self._walk(value)  # type: ignore[no-any-return]

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value

    def error(self, error: E) -> E:
        """Scrub a proxy error in place (message, metadata, relayed headers); return it."""
        if self._secrets and isinstance(error, ProxyError):
            error.message = self.text(error.message)
            error.args = (error.message,)  # what str() and tracebacks show
            error.headers = self.value(error.headers)
            if isinstance(error, UpstreamRejected):
                error.metadata = self.value(error.metadata)
                error.upstream_headers = self.value(error.upstream_headers)
                error.code = self.text(error.code)
        return error
