"""The team stage of the pipeline, in the order a request meets it (DESIGN §7): who calls,
whether its quotas admit it, which candidates it may use, whether the account's free
allowance covers each attempt, and what it spent.

It ties the key ring, the quota and budget stores and the free-only rules together so the
pipeline calls one object; each decision stays in the module that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.errors import RateLimited, UpstreamError
from app.free_tier import spends_allowance
from app.redaction import Redactor
from app.request import ParsedRequest
from app.routing.catalogue import Catalogue, ModelInfo
from app.team import free_only
from app.team.auth import Caller
from app.team.budget import BudgetStore, BudgetView, allowance_message
from app.team.database import Database
from app.team.quota_views import ratelimit_headers
from app.team.quotas import QuotaStore


@dataclass(frozen=True, slots=True)
class Hold:
    """The account's free allowance holds `model` back for this request until `until`."""

    until: float
    message: str


@dataclass(slots=True)
class Admission:
    """A request the quotas let in: its lease, and the `x-ratelimit-*` headers it carries."""

    caller: Caller
    quotas: QuotaStore
    lease: int | None
    headers: dict[str, str] = field(default_factory=dict)

    async def done(self) -> None:
        """Hand the concurrency lease back; later calls do nothing."""
        lease, self.lease = self.lease, None
        if lease is not None and self.caller.key is not None:
            await self.quotas.release(self.caller.key, lease)


class Gate:
    def __init__(
        self,
        team: Database,
        quotas: QuotaStore,
        budget: BudgetStore,
        catalogue: Catalogue,
        redactor: Redactor,
        clock: Callable[[], float],
    ) -> None:
        self.team = team
        self.quotas = quotas
        self.budget = budget
        self._catalogue = catalogue
        self._redactor = redactor
        self._clock = clock

    async def authenticate(self, authorization: str | None, x_api_key: str | None) -> Caller:
        """The caller, or InvalidKey (401). The secret that authenticated joins the
        redactor; nothing else a client sends does (DESIGN §5)."""
        caller = self.team.keyring.authenticate(authorization, x_api_key)
        if caller.key is not None:
            # Only a secret that matched a stored key: the other header, or any bearer in
            # open mode, is whatever text a client likes, and redacting it would let one
            # client rewrite every stream. So the set holds at most one secret per key.
            self._redactor.add(caller.secret)
            await self.budget.mark_active(caller.key.name, self._clock())  # shares the allowance
        return caller

    async def admit(self, caller: Caller, parsed: ParsedRequest) -> Admission:
        """The request-wide free-only check, then the quotas; both before any upstream call."""
        key = caller.key
        now = self._clock()
        if key is not None and not key.paid:
            reason = free_only.body_refusal(parsed.data)
            if reason is not None:
                refusal = free_only.forbidden(key.name, [free_only.Skipped("", reason, True)])
                # Every response of a limited key carries its x-ratelimit-* (DESIGN §7).
                refusal.headers.update(await self.ratelimit_headers(caller))
                raise refusal
        try:
            grant = await self.quotas.admit(key, now)
        except RateLimited as refusal:
            refusal.headers.update(await self.ratelimit_headers(caller))
            raise
        return Admission(caller, self.quotas, grant.lease, ratelimit_headers(grant.views, now))

    async def ratelimit_headers(self, caller: Caller) -> dict[str, str]:
        """The caller's `x-ratelimit-*` headers now, counting nothing."""
        if caller.key is None:
            return {}
        now = self._clock()
        return ratelimit_headers(await self.quotas.snapshot(caller.key, now), now)

    async def allowed(
        self, caller: Caller, parsed: ParsedRequest, names: Sequence[str]
    ) -> list[str]:
        """The candidates this key may use; 403 naming why when none is left."""
        key = caller.key
        if key is None or (key.paid and not key.models):
            return list(names)
        models = await self._models()
        kept: list[str] = []
        skipped: list[free_only.Skipped] = []
        for name in names:
            refused = free_only.check_candidate(key, name, models.get(name), parsed.data)
            if refused is None:
                kept.append(name)
            else:
                skipped.append(refused)
        if not kept:
            refusal = free_only.forbidden(key.name, skipped)
            # Every response of a limited key carries its x-ratelimit-* (DESIGN §7).
            refusal.headers.update(await self.ratelimit_headers(caller))
            raise refusal
        return kept

    async def may_use(self, caller: Caller, parsed: ParsedRequest, model: str) -> bool:
        """Whether `model` may answer this caller's request: what `allowed` checks, for a
        cached answer (which spends nothing, but the key's models still bind)."""
        key = caller.key
        if key is None or (key.paid and not key.models):
            return True
        info = (await self._models()).get(model)
        return free_only.check_candidate(key, model, info, parsed.data) is None

    async def spend(self, caller: Caller, model: str) -> Hold | None:
        """Count one attempt on `model` against the free allowance, or say until when the
        allowance (the account's, or this key's fair share) holds it back."""
        if not spends_allowance(model):
            return None
        now = self._clock()
        refusal = await self.budget.take(caller.name, self.members(), now)
        if refusal is None:
            return None
        return Hold(refusal.until, allowance_message(refusal, now, caller.name))

    async def tokens(self, caller: Caller, count: int) -> None:
        await self.quotas.add_tokens(caller.key, count, self._clock())

    def members(self) -> dict[str, float]:
        """The keys that may share the free allowance (not revoked), with when each was
        created; `fair_share.active_keys` picks the active ones."""
        return {key.name: key.created for key in self.team.keyring.keys() if key.revoked is None}

    async def free_budget(self, key_name: str | None) -> BudgetView:
        """The free allowance as `key_name` sees it, counting nothing."""
        return await self.budget.snapshot(key_name, self.members(), self._clock())

    async def _models(self) -> dict[str, ModelInfo]:
        try:
            return await self._catalogue.models()
        except UpstreamError:
            return {}  # unknown ids count as priced: nothing free-only slips through
