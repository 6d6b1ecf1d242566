"""Which requests the cache may answer, and the exact-match key they are filed under.

The key is the sha256 of a canonical encoding (orjson with sorted keys, so the order of
object keys never matters) of the route, the model as requested (aliases such as `free`
included, so `free` and a concrete id never share answers), the scope, and every body
field except `stream`, `stream_options` and `user` (DESIGN §8); the body's `model` is
replaced by the model as requested (the default model filled in). On Responses and Messages
the stream mode is part of the key too: there a hit replays the stored answer in the mode
it was stored (SSE or JSON), so a stream request must never find a JSON-only answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.request import Dialect

Mode = Literal["off", "deterministic", "all"]
XCache = Literal["HIT", "MISS", "BYPASS"]

# Fields that change how an answer is delivered or who asked, never what it says.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "model"})
# Bump when the encoding changes, so a shared (Redis) cache never mixes two formats.
_KEY_VERSION = "v1"


_NUMBER = (int, float)  # a tuple: `int | float` would build a new union on every call


def scope_for(cache_scope: str, key_name: str | None) -> str:
    """The scope string: `global`, or `key:<name>` (prefixed, so a key named "global" differs)."""
    if cache_scope == "global":
        return "global"
    return f"key:{key_name or ''}"


def cache_key(dialect: Dialect, body: dict[str, Any], requested_model: str, scope: str) -> str:
    """sha256 hex of the canonical request; equal for requests that must share an answer.
    An API whose streams are kept as sent is replayed only in the mode stored (DESIGN §8),
    so the mode is in its key."""
    fields = {name: value for name, value in body.items() if name not in _NOT_IN_KEY}
    parts: list[Any] = [_KEY_VERSION, dialect.name, requested_model, scope, fields]
    if dialect.keeping.completed_event is not None:
        parts.append(bool(body.get("stream")))
    try:
        canonical = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses integers beyond 64 bits; the stdlib encoder is just as canonical.
        canonical = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Eligibility:
    """What the cache may do for one request, and its `X-Cache` value unless it is a hit."""

    lookup: bool
    store: bool
    status: XCache  # "MISS" when eligible (no-cache included), "BYPASS" when not


BYPASS = Eligibility(lookup=False, store=False, status="BYPASS")
_FULL = Eligibility(lookup=True, store=True, status="MISS")
_STORE_ONLY = Eligibility(lookup=False, store=True, status="MISS")


def eligibility(
    mode: Mode, dialect: Dialect, body: dict[str, Any], cache_control: str | None
) -> Eligibility:
    """DESIGN §4/§8: `off` is off for every route, embeddings included (the operator said so);
    otherwise a deterministic API (embeddings) always qualifies, `all` takes everything, and
    `deterministic` needs `temperature` 0 or a `seed` (the same fields on every route).
    `Cache-Control: no-store` bypasses; `no-cache` skips the lookup but stores."""
    if mode == "off":
        return BYPASS
    if mode == "deterministic" and not dialect.keeping.deterministic and not is_deterministic(body):
        return BYPASS
    directives = _directives(cache_control)
    if "no-store" in directives:
        return BYPASS
    if "no-cache" in directives:
        return _STORE_ONLY
    return _FULL


def is_deterministic(body: dict[str, Any]) -> bool:
    """Temperature 0 (greedy decoding) or a seed set; a bool is not a number here."""
    temperature = body.get("temperature")
    if isinstance(temperature, _NUMBER) and not isinstance(temperature, bool):
        if temperature == 0:
            return True
    return body.get("seed") is not None


def _directives(header: str | None) -> set[str]:
    """Cache-Control directive names, lower-cased (RFC 9111 §5.2: case-insensitive)."""
    if not header:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
