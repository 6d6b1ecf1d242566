"""What OpenRouter's answers mean: which 200s are usable, and how an error body, with an
HTTP error status or inside a 200 (openrouter-api.md §4, §7), becomes `UpstreamRejected`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from app.errors import UpstreamBroken, UpstreamError, UpstreamRejected
from app.header_text import header_safe

Reject = Callable[[dict[str, Any], str], UpstreamError]

# Upstream headers a client needs to act on a relayed error (openrouter-api.md §8).
_RELAYED_HEADERS = {
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
}


def parse_answer(body: bytes, model: str, reject: Reject | None = None) -> dict[str, Any]:
    """A 200 body as an object, or the UpstreamError it really is: empty, cut off, not an
    object, or an error carried in-band (openrouter-api.md §7, §10.1)."""
    if not body:
        raise UpstreamBroken(f"{model}: OpenRouter sent an empty answer (only whitespace)")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamBroken(f"{model}: OpenRouter sent a cut-off or invalid answer") from exc
    if not isinstance(data, dict):
        raise UpstreamBroken(f"{model}: OpenRouter sent an answer that is not an object")
    if data.get("error"):
        raise (reject or in_band_rejection)(data, model)
    return data


def check_answer(body: bytes, model: str) -> dict[str, Any]:
    """An OpenAI chat or completions 200 is a success only with `choices` and no error;
    the parsed answer, so nobody parses it twice."""
    data = parse_answer(body, model)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list):
        raise UpstreamBroken(f"{model}: OpenRouter sent an answer without choices")
    first = choices[0] if isinstance(choices[0], dict) else {}
    if first.get("finish_reason") == "error":
        raise in_band_rejection({"error": first.get("error") or {}}, model)
    return data


def in_band_rejection(data: dict[str, Any], model: str) -> UpstreamRejected:
    """An error carried by a 200 (body or SSE event): `error.code` is the real status."""
    error = data.get("error")
    if not isinstance(error, dict):  # `{"error": "boom"}`: keep what it said
        error = {"message": f"OpenRouter sent an error: {str(error)[:200]}"}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 502
    return _rejected(status, error, {}, model)


def rejection(status: int, body: bytes, headers: dict[str, str], model: str) -> UpstreamRejected:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        text = body.decode("utf-8", "replace").strip()[:200]
        error = {"message": f"OpenRouter answered HTTP {status}" + (f": {text}" if text else "")}
    return _rejected(status, error, headers, model)


def _rejected(
    status: int, error: dict[str, Any], headers: dict[str, str], model: str
) -> UpstreamRejected:
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    # Rate-limit headers are echoed in metadata.headers on in-band errors (§4.3).
    echoed = metadata.get("headers") if isinstance(metadata.get("headers"), dict) else {}
    assert isinstance(echoed, dict)
    merged = {**{k.lower(): str(v) for k, v in echoed.items()}, **headers}
    message = str(error.get("message") or f"OpenRouter answered HTTP {status}")
    # Lower-case names: the same header echoed in the body and sent for real, or set
    # again by the proxy (`retry-after`), must reach the client once.
    relayed = {k.lower(): v for k, v in merged.items() if k.lower() in _RELAYED_HEADERS}
    return UpstreamRejected(
        status, message, metadata=metadata, upstream_headers=merged, headers=header_safe(relayed)
    )
