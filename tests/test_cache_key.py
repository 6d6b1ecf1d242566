"""The cache key groups exactly the requests that must share an answer; eligibility follows §8."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.routes import INFERENCE
from app.cache.key import cache_key, eligibility, scope_for

DIALECTS = {dialect.name: dialect for dialect in INFERENCE.values()}

MESSAGES = [{"role": "user", "content": "hi"}]
BODY: dict[str, Any] = {
    "model": "free",
    "messages": MESSAGES,
    "temperature": 0,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": 1, "b": 2}}}],
}


def key(body: dict[str, Any], route: str = "chat", model: str = "free", scope: str = "global"):
    return cache_key(DIALECTS[route], body, model, scope)


def test_object_key_order_does_not_matter_at_any_depth():
    reordered = {
        "tools": [{"function": {"parameters": {"b": 2, "a": 1}, "name": "f"}, "type": "function"}],
        "temperature": 0,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "free",
    }
    assert key(reordered) == key(BODY)


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "alice"},
    ],
)
def test_delivery_and_caller_fields_are_not_in_the_key(extra: dict[str, Any]):
    assert key({**BODY, **extra}) == key(BODY)


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "hello"}]},
        {"temperature": 0.5},
        {"seed": 7},
        {"tools": []},
        {"response_format": {"type": "json_object"}},
        {"models": ["a:free", "b:free"]},
        {"provider": {"order": ["DeepInfra"]}},
        {"max_tokens": 10},
        {"unknown_field": True},
    ],
)
def test_every_other_body_field_is_in_the_key(change: dict[str, Any]):
    assert key({**BODY, **change}) != key(BODY)


def test_route_requested_model_and_scope_are_in_the_key():
    base = key(BODY)
    assert key(BODY, route="completions") != base
    assert key(BODY, model="meta-llama/llama-4-scout:free") != base
    assert key(BODY, scope=scope_for("key", "alice")) != base
    assert scope_for("key", "alice") != scope_for("key", "bob")


def test_a_key_named_global_does_not_share_the_global_scope():
    assert scope_for("key", "global") != scope_for("global", "alice") == "global"


def test_responses_and_messages_keep_stream_and_json_answers_apart():
    """There a hit replays the stored mode, so a stream request must not find a JSON answer."""
    body = {"input": "hi", "temperature": 0}
    for route in ("responses", "messages"):
        assert key({**body, "stream": True}, route) != key(body, route)
        assert key({**body, "stream": False}, route) == key(body, route)


def test_integers_beyond_64_bits_still_give_a_key():
    big = {**BODY, "seed": 2**70}
    assert key(big) != key(BODY)
    assert key(big) == key(dict(reversed(list(big.items()))))


@pytest.mark.parametrize(
    ("mode", "route", "body", "header", "expected"),
    [
        ("off", "chat", {"temperature": 0}, None, (False, False, "BYPASS")),
        ("off", "embeddings", {"input": "x"}, None, (False, False, "BYPASS")),
        ("deterministic", "chat", {"temperature": 0}, None, (True, True, "MISS")),
        ("deterministic", "chat", {"temperature": 0.0}, None, (True, True, "MISS")),
        ("deterministic", "chat", {"seed": 1}, None, (True, True, "MISS")),
        ("deterministic", "chat", {"seed": 0, "temperature": 1}, None, (True, True, "MISS")),
        ("deterministic", "chat", {}, None, (False, False, "BYPASS")),
        ("deterministic", "chat", {"temperature": 0.7}, None, (False, False, "BYPASS")),
        ("deterministic", "chat", {"temperature": False}, None, (False, False, "BYPASS")),
        ("deterministic", "chat", {"seed": None}, None, (False, False, "BYPASS")),
        ("deterministic", "messages", {"temperature": 0}, None, (True, True, "MISS")),
        ("deterministic", "responses", {"temperature": 0}, None, (True, True, "MISS")),
        ("deterministic", "embeddings", {"input": "x"}, None, (True, True, "MISS")),
        ("all", "chat", {"temperature": 1.2}, None, (True, True, "MISS")),
        ("all", "chat", {}, "no-cache", (False, True, "MISS")),
        ("all", "chat", {}, "No-Cache, max-age=0", (False, True, "MISS")),
        ("all", "chat", {}, "no-store", (False, False, "BYPASS")),
        ("all", "chat", {}, "no-cache, no-store", (False, False, "BYPASS")),
        ("deterministic", "chat", {}, "no-cache", (False, False, "BYPASS")),
    ],
)
def test_eligibility(mode, route, body, header, expected):
    got = eligibility(mode, DIALECTS[route], body, header)
    assert (got.lookup, got.store, got.status) == expected
