"""What a key may ask for (DESIGN §7): its model patterns, and for a key without `--paid`
the free-only guarantee: nothing it sends can make the account spend money.

Checked before any upstream call and per candidate: a refused candidate is skipped, and
403 comes only when none is left. Choices beyond the design's list, each on the side of
not spending (openrouter-api.md §9, §16):
- an id missing from the catalogue counts as priced, `:free` suffix or not: OpenRouter's
  routers parse a `:free` suffix too (`openrouter/fusion-flash:free`), so the suffix
  alone proves nothing;
- `~author/family-latest` aliases and OpenRouter's model-picking routers are refused by
  name whatever the catalogue says; `openrouter/free` is allowed, being zero-priced and
  choosing among free models only;
- `web_search_options` (OpenAI's web search field) counts as web search;
- `tools` entries without a `type` or of type `custom` are client tools (Anthropic's
  Messages shape), as harmless as `function` ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

from app.errors import Forbidden, ModelNotAllowed, WouldCost
from app.free_tier import FREE_ROUTER
from app.team.quotas import KeyLimits

# Routers that pick models, tools or other models mid-request upstream, billed at the
# price of what they pick (openrouter-api.md §16.5).
COSTLY_ROUTERS = frozenset(
    {
        "openrouter/auto",
        "openrouter/auto-beta",
        "openrouter/fusion",
        "openrouter/fusion-flash",
        "openrouter/pareto-code",
        "openrouter/bodybuilder",
    }
)
# Tool types the client runs itself: OpenAI's and Anthropic's (which may omit `type`).
CLIENT_TOOL_TYPES = frozenset({"function", "custom", None})
HOW_TO_PAY = "A key created with `openrouter-proxy keys create NAME --paid` may spend."


class Priced(Protocol):
    """What free-only reads of a catalogue entry; `app.routing.catalogue.ModelInfo` satisfies it."""

    @property
    def is_free(self) -> bool: ...
    @property
    def is_router(self) -> bool: ...


def allowed_by_patterns(model: str, patterns: Sequence[str]) -> bool:
    """Shell globs, case-sensitive as model ids are; no patterns = every model."""
    return not patterns or any(fnmatchcase(model, pattern) for pattern in patterns)


def model_refusal(model: str, info: Priced | None) -> str | None:
    """Why calling `model` itself could cost, or None when it is zero-priced."""
    base, _, variants = model.partition(":")
    if "@preset/" in model:
        return f"'{model}' names an OpenRouter preset, which can pick priced models and tools"
    if "online" in variants.split(":"):
        return f"'{model}' adds web search (`:online`), which OpenRouter bills even on free models"
    if base.startswith("~"):
        return f"'{model}' is an alias OpenRouter resolves upstream to a model of unknown price"
    if base in COSTLY_ROUTERS:
        return f"'{model}' is an OpenRouter router, billed at the price of the model it picks"
    if info is None:
        return f"'{model}' is not in OpenRouter's catalogue, so the proxy cannot tell it is free"
    if info.is_router and model != FREE_ROUTER:
        return f"'{model}' is an OpenRouter router, billed at the price of the model it picks"
    if not info.is_free:
        return f"'{model}' is priced"
    return None


def body_refusal(body: Mapping[str, Any]) -> str | None:
    """Why the request itself would cost on any model, or None."""
    if body.get("preset"):
        return "the `preset` field applies an OpenRouter preset, which can pick priced models"
    plugins = body.get("plugins")
    if plugins:
        ids = [p.get("id", "?") if isinstance(p, Mapping) else str(p) for p in plugins]
        return f"`plugins` ({', '.join(map(str, ids))}) are billed even on free models"
    if body.get("web_search_options") is not None:
        return "`web_search_options` asks for web search, which OpenRouter bills"
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind not in CLIENT_TOOL_TYPES:
            return f"the tool of type '{kind}' runs on OpenRouter's side and is billed"
    return None


def refusal(model: str, info: Priced | None, body: Mapping[str, Any]) -> str | None:
    """Why this candidate would cost for a free-only key: the model's reason, else the body's."""
    return model_refusal(model, info) or body_refusal(body)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A candidate the key may not use, and why."""

    model: str
    reason: str
    would_cost: bool


def check_candidate(
    key: KeyLimits | None, model: str, info: Priced | None, body: Mapping[str, Any]
) -> Skipped | None:
    """None when `key` may call `model` with `body`; open mode (no key) may call anything."""
    if key is None:
        return None
    if not allowed_by_patterns(model, key.models):
        patterns = ", ".join(key.models)
        return Skipped(model, f"'{model}' is outside the key's models ({patterns})", False)
    if not key.paid:
        reason = refusal(model, info, body)
        if reason is not None:
            return Skipped(model, reason, True)
    return None


def forbidden(key_name: str, skipped: Sequence[Skipped]) -> Forbidden:
    """The 403 once every candidate was skipped: each reason, and what would allow it."""
    reasons = "; ".join(dict.fromkeys(s.reason for s in skipped)) or "no model"
    if any(s.would_cost for s in skipped):
        return WouldCost(
            f"Key '{key_name}' is free-only and every candidate would cost: {reasons}. {HOW_TO_PAY}"
        )
    return ModelNotAllowed(
        f"Key '{key_name}' may not use the requested model: {reasons}. "
        "Ask for a model the key allows, or for a key with wider `--models`."
    )
