"""The gate built directly (DESIGN §7): who calls, whether the quotas admit it, which
candidates its key may use, and whether the free allowance covers an attempt, over the
memory stores, a key ring fed in memory and a fixed catalogue. The same rules end to end
are in test_e2e_team.py and test_e2e_key_mode.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from app.api.chat import CHAT
from app.errors import Forbidden, InvalidKey, QuotaExceeded
from app.redaction import Redactor
from app.request import ParsedRequest
from app.routing.catalogue import Catalogue
from app.team.auth import OPEN, KeyRing
from app.team.budget import MemoryBudget
from app.team.gate import Gate, Hold
from app.team.keys import ApiKey, hash_secret
from app.team.quotas import MemoryQuotas

pytestmark = pytest.mark.anyio

NOW = 1_000_000.0
FREE, PRICED = "vendor/small:free", "vendor/large"
SECRET = "sk-proxy-alice-0123456789"


class Upstream:
    async def get_json(self, path: str, *, auth: bool = True) -> Any:
        priced = {"prompt": "0.000001", "completion": "0.000002"}
        return {
            "data": [
                {"id": FREE, "pricing": {"prompt": "0", "completion": "0"}},
                {"id": PRICED, "pricing": priced},
            ]
        }


def key(name: str = "alice", **limits: Any) -> ApiKey:
    fields: dict[str, Any] = {
        "prefix": "sk-proxy-al",
        "created": NOW - 60,
        "revoked": None,
        "rpm": None,
        "rpd": None,
        "tpd": None,
        "concurrency": None,
        "models": (),
        "paid": True,
    }
    return ApiKey(name=name, **{**fields, **limits})


def gate(*keys: ApiKey, free_rpm: int = 20) -> tuple[Gate, Redactor]:
    ring = KeyRing(None, clock=lambda: NOW)
    ring.replace([(hash_secret(SECRET if k.name == "alice" else k.name), k) for k in keys])
    team = SimpleNamespace(keyring=ring)
    redactor = Redactor()
    catalogue = Catalogue(Upstream(), lambda: NOW)
    budget, quotas = MemoryBudget(free_rpm, 1000), MemoryQuotas(lambda: NOW)
    built = Gate(team, quotas, budget, catalogue, redactor, lambda: NOW)  # type: ignore[arg-type]
    return built, redactor


def chat(model: str = PRICED) -> ParsedRequest:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return CHAT.parse(orjson.dumps(body), model)


async def test_open_mode_lets_everyone_use_every_model():
    open_gate, _ = gate()
    caller = await open_gate.authenticate(None, None)
    assert caller is OPEN
    assert await open_gate.allowed(caller, chat(), [PRICED, FREE]) == [PRICED, FREE]
    assert (await open_gate.admit(caller, chat())).headers == {}


async def test_the_secret_that_authenticated_is_redacted_from_then_on():
    keyed, redactor = gate(key())
    caller = await keyed.authenticate(f"Bearer {SECRET}", None)
    assert caller.name == "alice"
    assert SECRET not in redactor.text(f"upstream echoed {SECRET}")


async def test_a_wrong_or_missing_key_is_refused_once_keys_exist():
    keyed, redactor = gate(key())
    with pytest.raises(InvalidKey):
        await keyed.authenticate("Bearer sk-proxy-wrong", None)
    with pytest.raises(InvalidKey):
        await keyed.authenticate(None, None)
    assert redactor.text("sk-proxy-wrong") == "sk-proxy-wrong"  # a guess is not a secret


async def test_a_free_only_key_keeps_only_zero_priced_candidates():
    keyed, _ = gate(key(paid=False))
    caller = await keyed.authenticate(None, SECRET)
    assert await keyed.allowed(caller, chat(), [PRICED, FREE]) == [FREE]
    assert await keyed.may_use(caller, chat(), FREE)
    assert not await keyed.may_use(caller, chat(), PRICED)


async def test_a_key_left_with_no_candidate_is_refused_with_its_ratelimit_headers():
    keyed, _ = gate(key(paid=False, rpm=5))
    caller = await keyed.authenticate(f"Bearer {SECRET}", None)
    with pytest.raises(Forbidden) as refused:
        await keyed.allowed(caller, chat(), [PRICED])
    assert "x-ratelimit-limit-requests" in refused.value.headers


async def test_quotas_admit_until_the_limit_and_count_nothing_refused():
    keyed, _ = gate(key(rpm=1))
    caller = await keyed.authenticate(f"Bearer {SECRET}", None)
    admitted = await keyed.admit(caller, chat())
    assert admitted.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(QuotaExceeded) as refused:
        await keyed.admit(caller, chat())
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_concurrency_lease_is_handed_back_once_when_done():
    keyed, _ = gate(key(concurrency=1))
    caller = await keyed.authenticate(f"Bearer {SECRET}", None)
    first = await keyed.admit(caller, chat())
    with pytest.raises(QuotaExceeded):
        await keyed.admit(caller, chat())
    await first.done()
    await first.done()  # a second call frees nothing more
    second = await keyed.admit(caller, chat())
    with pytest.raises(QuotaExceeded):
        await keyed.admit(caller, chat())
    await second.done()


async def test_the_free_allowance_holds_a_free_model_back_and_never_a_priced_one():
    open_gate, _ = gate(free_rpm=1)
    assert await open_gate.spend(OPEN, FREE) is None
    held = await open_gate.spend(OPEN, FREE)
    assert isinstance(held, Hold) and held.until > NOW and held.message
    assert await open_gate.spend(OPEN, PRICED) is None
