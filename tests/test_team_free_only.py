"""What a key may ask for: model patterns, and the free-only guarantee for keys without --paid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from app.api.render import error_response
from app.errors import ModelNotAllowed, WouldCost
from app.routing.catalogue import ModelInfo
from app.team.free_only import (
    Skipped,
    allowed_by_patterns,
    body_refusal,
    check_candidate,
    forbidden,
    refusal,
)

ZERO = {"prompt": "0", "completion": "0", "request": "0", "image": "0"}
CATALOGUE = {
    m.id: m
    for m in (
        ModelInfo("meta-llama/llama-4-scout:free", {"pricing": ZERO}),
        ModelInfo("openrouter/optimus-alpha", {"pricing": ZERO}),
        ModelInfo("openrouter/free", {"pricing": ZERO}),
        ModelInfo("openai/gpt-4o", {"pricing": {"prompt": "0.0000025", "completion": "0.00001"}}),
        ModelInfo("openrouter/auto", {"pricing": {"prompt": "-1", "completion": "-1"}}),
        ModelInfo("acme/router-x", {"pricing": {"prompt": "-1", "completion": "-1"}}),
        ModelInfo("openrouter/fusion-flash:free", {"pricing": ZERO}),
        ModelInfo("img/gen:free", {"pricing": {**ZERO, "image_output": "0.00004"}}),
    )
}
FREE = "meta-llama/llama-4-scout:free"


def why(model: str, body: dict[str, Any] | None = None) -> str | None:
    return refusal(model, CATALOGUE.get(model), body or {})


@pytest.mark.parametrize("model", [FREE, "openrouter/optimus-alpha", "openrouter/free"])
def test_zero_priced_models_are_allowed(model):
    assert why(model) is None


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("openai/gpt-4o", "is priced"),
        ("img/gen:free", "is priced"),  # a non-zero image_output price is a price
        ("openrouter/auto", "router"),
        ("acme/router-x", "router"),  # priced "-1": billed at whatever it picks
        ("openrouter/fusion-flash:free", "router"),  # by name, whatever the catalogue says
        ("@preset/team-default", "preset"),
        (f"{FREE}@preset/team-default", "preset"),
        (f"{FREE}:online", "web search"),
        ("openai/gpt-4o:online", "web search"),
        ("~anthropic/claude-opus-latest", "alias"),
        ("nobody/unknown-model:free", "not in OpenRouter's catalogue"),
    ],
)
def test_what_would_cost_is_refused_with_its_reason(model, words):
    reason = why(model)
    assert reason is not None and words in reason
    assert f"'{model}'" in reason


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"plugins": [{"id": "web"}]}, "`plugins` (web)"),
        ({"plugins": [{"id": "file-parser"}, {"id": "response-healing"}]}, "file-parser"),
        ({"tools": [{"type": "openrouter:web_search"}]}, "'openrouter:web_search'"),
        ({"tools": [{"type": "web_search"}]}, "'web_search'"),  # hoisted to the server tool
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f"}},
                    {"type": "image_generation"},
                ]
            },
            "'image_generation'",
        ),
        ({"preset": "team-default"}, "preset"),
        ({"web_search_options": {"search_context_size": "low"}}, "web search"),
    ],
)
def test_request_wide_costs_are_refused(body, words):
    reason = body_refusal(body)
    assert reason is not None and words in reason
    # The same reason stops every candidate, free ones too.
    assert why(FREE, body) == reason


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"plugins": []},
        {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]},
        {"tools": [{"name": "get_weather", "input_schema": {}}]},  # Anthropic client tool
        {"tools": [{"type": "custom", "name": "x", "input_schema": {}}]},
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0},
    ],
)
def test_ordinary_requests_cost_nothing(body):
    assert body_refusal(body) is None
    assert why(FREE, body) is None


def test_the_model_reason_comes_before_the_body_reason():
    reason = why("openai/gpt-4o", {"plugins": [{"id": "web"}]})
    assert reason == "'openai/gpt-4o' is priced"


@pytest.mark.parametrize(
    ("model", "patterns", "allowed"),
    [
        ("openai/gpt-4o", (), True),  # no patterns = every model
        (FREE, ("*:free",), True),
        ("openai/gpt-4o", ("*:free",), False),
        ("openai/gpt-4o", ("*:free", "openai/*"), True),
        ("OPENAI/gpt-4o", ("openai/*",), False),  # case-sensitive, as ids are
        ("openai/gpt-4o-mini", ("openai/gpt-4o",), False),  # a whole-id match
        ("openai/gpt-4o-mini", ("openai/gpt-4o?mini",), True),
    ],
)
def test_allowed_by_patterns(model, patterns, allowed):
    assert allowed_by_patterns(model, patterns) is allowed


@dataclass(frozen=True)
class Key:
    name: str = "alice"
    rpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    concurrency: int | None = None
    models: tuple[str, ...] = ()
    paid: bool = False


def check(key: Key | None, model: str, body: dict[str, Any] | None = None) -> Skipped | None:
    return check_candidate(key, model, CATALOGUE.get(model), body or {})


def test_free_only_keys_skip_what_would_cost():
    skipped = check(Key(), "openai/gpt-4o")
    assert skipped == Skipped("openai/gpt-4o", "'openai/gpt-4o' is priced", True)
    assert check(Key(), FREE) is None


def test_paid_keys_may_spend_but_stay_within_their_patterns():
    paid = Key(paid=True, models=("openai/*", "*:free"))
    assert check(paid, "openai/gpt-4o", {"plugins": [{"id": "web"}]}) is None
    skipped = check(paid, "anthropic/claude-3.5-sonnet")
    assert skipped is not None and not skipped.would_cost
    assert "outside the key's models (openai/*, *:free)" in skipped.reason


def test_open_mode_has_no_key_to_restrict():
    assert check(None, "openai/gpt-4o", {"plugins": [{"id": "web"}]}) is None


def test_the_403_names_what_would_cost_and_how_to_get_it():
    skipped = [check(Key(), "openai/gpt-4o"), check(Key(), "openrouter/auto")]
    error = forbidden("alice", [s for s in skipped if s is not None])
    assert isinstance(error, WouldCost)
    response = error_response(error)
    assert response.status_code == 403
    body = orjson.loads(response.body)["error"]
    assert (body["type"], body["code"]) == ("permission_error", "would_cost")
    assert "'openai/gpt-4o' is priced" in body["message"]
    assert "'openrouter/auto' is an OpenRouter router" in body["message"]
    assert "--paid" in body["message"]


def test_the_403_for_patterns_names_the_patterns():
    skipped = check(Key(models=("*:free",)), "openai/gpt-4o")
    assert skipped is not None
    error = forbidden("alice", [skipped])
    assert isinstance(error, ModelNotAllowed)
    assert (error.status_code, error.code) == (403, "model_not_allowed")
    assert "outside the key's models (*:free)" in error.message


def test_a_reason_shared_by_every_candidate_is_said_once():
    body = {"plugins": [{"id": "web"}]}
    skipped = [check(Key(), m, body) for m in (FREE, "openrouter/free")]
    error = forbidden("alice", [s for s in skipped if s is not None])
    assert error.message.count("`plugins`") == 1
