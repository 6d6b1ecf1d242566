"""OpenRouter's free-tier facts (openrouter-api.md §5, §9), in one place for every stage.

- A *free variant* is a model id ending in `:free`; the account-wide free-tier limits
  (free-models-per-min / -per-day) cool exactly these at once.
- `openrouter/free`, OpenRouter's router over free models, is zero-priced and not a
  variant, but each call through it spends the same account-wide free allowance.
"""

from __future__ import annotations

FREE_SUFFIX = ":free"
FREE_ROUTER = "openrouter/free"


def is_free_variant(model: str) -> bool:
    """The account-wide free-tier limits apply to `:free` ids only (openrouter-api.md §5)."""
    return model.endswith(FREE_SUFFIX)


def spends_allowance(model: str) -> bool:
    """`:free` ids and the free router share the account's free counter (§5.1, §9)."""
    return is_free_variant(model) or model == FREE_ROUTER
