"""How a key's counts are shown to its client: OpenAI's `x-ratelimit-*` headers and the
fields of GET /v1/usage (DESIGN §4, §7). Pure functions over a quota store's views."""

from __future__ import annotations

from app.team.quotas import LimitView, reset_duration


def ratelimit_headers(views: dict[str, LimitView | None], now: float) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for a limited key's counts, else `{}`."""
    headers: dict[str, str] = {}
    # The -requests headers describe whichever of rpm/rpd has fewer requests left (ties:
    # the one that takes longer to reset), the one that will refuse the client first.
    requests = [v for v in (views["rpm"], views["rpd"]) if v is not None]
    if requests:
        tightest = min(requests, key=lambda v: (v["remaining"], -(v["resets_at"] or 0.0)))
        headers.update(_headers("requests", tightest, now))
    if views["tpd"] is not None:
        headers.update(_headers("tokens", views["tpd"], now))
    return headers


def usage_fields(snapshot: dict[str, LimitView | None]) -> dict[str, dict[str, object]]:
    """Pivot a snapshot into GET /v1/usage's `limits`/`used`/`remaining`/`resets_at` (§4)."""
    fields: dict[str, dict[str, object]] = {
        "limits": {},
        "used": {},
        "remaining": {},
        "resets_at": {},
    }
    for name, view in snapshot.items():
        fields["limits"][name] = view["limit"] if view else None
        fields["used"][name] = view["used"] if view else None
        fields["remaining"][name] = view["remaining"] if view else None
        fields["resets_at"][name] = view["resets_at"] if view else None
    return fields


def _headers(unit: str, view: LimitView, now: float) -> dict[str, str]:
    """`x-ratelimit-reset-*` is the time until the limit is back to its initial state, as
    OpenAI defines it (https://platform.openai.com/docs/guides/rate-limits)."""
    resets_at = view["resets_at"]
    return {
        f"x-ratelimit-limit-{unit}": str(view["limit"]),
        f"x-ratelimit-remaining-{unit}": str(view["remaining"]),
        f"x-ratelimit-reset-{unit}": reset_duration(0 if resets_at is None else resets_at - now),
    }
