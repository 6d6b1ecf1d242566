"""The fallback walk in its three parts, built directly: the selector (which model next),
the try-again table (whether to go on), and the loop over an injected attempt function
with a memory cooldown store and a fixed clock (DESIGN §6). The end-to-end behaviour is
in test_e2e_fallback.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from app.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from app.routing.again import DROP, KEEP, MAX_TRIES_PER_MODEL, PAUSE, STOP, Again, again
from app.routing.attempts import Attempts
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import NOTHING_KNOWN, MemoryCooldowns, ModelStates
from app.routing.policy import Next, Scope, Verdict
from app.routing.selector import Pick, pick

pytestmark = pytest.mark.anyio

NOW = 1_000_000.0
A, B, C = "vendor/a", "vendor/b", "vendor/c:free"


@dataclass(frozen=True)
class Held:
    until: float
    message: str = "your share of the free allowance is used"


def states(cooling: dict[str, float] | None = None, failing: set[str] | None = None) -> ModelStates:
    return ModelStates(cooling or {}, frozenset(failing or ()), {})


# The selector ------------------------------------------------------------------------


def test_the_selector_takes_the_first_ready_model_in_order():
    assert pick([A, B], NOTHING_KNOWN, {}, NOW) == Pick(A, alone=False)


def test_the_selector_skips_a_cooling_model():
    assert pick([A, B], states(cooling={A: NOW + 30}), {}, NOW) == Pick(B, alone=True)


def test_the_selector_tries_failing_models_after_the_others():
    assert pick([A, B], states(failing={A}), {}, NOW) == Pick(B, alone=False)
    assert pick([A, B], states(failing={A, B}), {}, NOW) == Pick(A, alone=False)


def test_the_selector_treats_a_held_model_as_cooling_for_this_request():
    assert pick([A, B], NOTHING_KNOWN, {A: Held(NOW + 10)}, NOW) == Pick(B, alone=True)
    assert pick([A, B], NOTHING_KNOWN, {A: Held(NOW - 1)}, NOW).model == A  # hold is over


def test_with_nothing_ready_the_selector_waits_for_the_soonest_back():
    chosen = pick([A, B], states(cooling={A: NOW + 30}), {B: Held(NOW + 5)}, NOW)
    assert chosen == Pick(None, wait=5.0)


# The try-again table -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "lone", "tries", "expected"),
    [
        (Verdict(Next.RELAY, None), False, 1, STOP),
        (Verdict(Next.STOP, None), False, 1, STOP),
        (Verdict(Next.ANY, Scope.FAILING), True, 1, PAUSE),
        (Verdict(Next.ANY, Scope.FAILING), True, 2, DROP),
        (Verdict(Next.ANY, Scope.FAILING), False, 1, DROP),
        (Verdict(Next.ANY, Scope.MODEL), False, 1, KEEP),
        (Verdict(Next.ANY, Scope.FREE_TIER), True, 1, KEEP),
        (Verdict(Next.ANY, Scope.MODEL), False, MAX_TRIES_PER_MODEL, DROP),
        (Verdict(Next.ANY, None), False, 1, DROP),
        (Verdict(Next.FREE_ONLY, None), False, 1, Again(only=Next.FREE_ONLY)),
        (Verdict(Next.LARGER_CONTEXT, None), True, 1, Again(only=Next.LARGER_CONTEXT)),
    ],
)
def test_the_try_again_table(verdict: Verdict, lone: bool, tries: int, expected: Again):
    assert again(verdict, lone=lone, tries=tries) == expected


# The loop, built directly ------------------------------------------------------------


class Upstream:
    """The catalogue's one upstream call."""

    def __init__(self, models: list[dict[str, Any]]) -> None:
        self.models = models

    async def get_json(self, path: str, *, auth: bool = True) -> Any:
        return {"data": self.models}


def entry(model: str, *, context: int = 8192, price: str = "0.000001") -> dict[str, Any]:
    return {
        "id": model,
        "context_length": context,
        "pricing": {"prompt": price, "completion": price},
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
    }


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []

    def attempt(self, model: str, outcome: Any) -> None:
        self.outcomes.append((model, outcome))


class Script:
    """An attempt function answering from a script: per model, the errors to raise
    before it answers."""

    def __init__(self, **failures: list[UpstreamError]) -> None:
        self.failures = {model.replace("_", "/"): errors for model, errors in failures.items()}
        self.calls: list[tuple[str, bool]] = []

    async def __call__(self, model: str, *, last: bool) -> str:
        self.calls.append((model, last))
        errors = self.failures.get(model, [])
        if errors:
            raise errors.pop(0)
        return f"answer of {model}"


async def never_gone() -> bool:
    return False


def walk(*models: dict[str, Any], max_wait: float = 0.0, max_attempts: int = 10):
    cooldowns = MemoryCooldowns(lambda: NOW)
    recorder = Recorder()
    catalogue = Catalogue(Upstream(list(models)), lambda: NOW)
    attempts = Attempts(cooldowns, catalogue, lambda: NOW, max_wait, max_attempts, recorder)
    return attempts, cooldowns, recorder


def limited() -> UpstreamRejected:
    return UpstreamRejected(429, "Rate limit exceeded", metadata={"raw": "slow down"})


async def test_the_loop_falls_back_and_says_who_answered_after_how_many_attempts():
    attempts, cooldowns, recorder = walk()
    script = Script(vendor_a=[UpstreamTimeout("vendor/a: no answer in time")])
    served = await attempts.first_success([A, B], script, never_gone)
    assert (served.result, served.model, served.attempts) == ("answer of vendor/b", B, 2)
    assert script.calls == [(A, False), (B, True)]
    assert recorder.outcomes == [(A, "timeout"), (B, "ok")]
    assert (await cooldowns.snapshot([A], NOW)).failing == {A}


async def test_a_relayed_error_carries_its_attempt_count_as_data():
    attempts, _, _ = walk()
    refused = UpstreamRejected(400, "messages: field required")
    with pytest.raises(UpstreamRejected) as raised:
        await attempts.first_success([A, B], Script(vendor_a=[refused]), never_gone)
    assert raised.value is refused and refused.attempts == 1
    assert "X-Proxy-Attempts" not in refused.headers


async def test_an_unreachable_upstream_stops_the_walk():
    attempts, _, _ = walk()
    script = Script(vendor_a=[UpstreamUnreachable("cannot reach OpenRouter")])
    with pytest.raises(UpstreamUnreachable):
        await attempts.first_success([A, B], script, never_gone)
    assert [model for model, _ in script.calls] == [A]


async def test_every_candidate_rate_limited_is_a_429_naming_when_they_come_back():
    attempts, _, _ = walk()
    script = Script(vendor_a=[limited()], vendor_b=[limited()])
    with pytest.raises(UpstreamRejected) as raised:
        await attempts.first_success([A, B], script, never_gone)
    error = raised.value
    assert error.status_code == 429 and error.attempts == 2
    assert "Every candidate model is rate-limited or cooling" in error.message
    assert "OpenRouter said: Rate limit exceeded" in error.message
    assert error.metadata == {"raw": "slow down"}  # the relayed 429 keeps its metadata
    assert int(error.headers["retry-after"]) >= 1


async def test_failures_everywhere_name_every_candidate_and_the_last_error():
    attempts, _, _ = walk()
    script = Script(vendor_a=[UpstreamTimeout("a timed out")], vendor_b=[UpstreamTimeout("b")])
    with pytest.raises(UpstreamTimeout) as raised:
        await attempts.first_success([A, B], script, never_gone)
    assert raised.value.message == (
        "All 2 candidate models failed or are cooling (vendor/a, vendor/b); the last error was: b"
    )


async def test_a_model_held_back_for_this_request_is_not_tried_and_nobody_else_is_cooled():
    attempts, cooldowns, _ = walk()
    script = Script()

    async def spend(model: str) -> Held | None:
        return Held(NOW + 60) if model == A else None

    served = await attempts.first_success([A, B], script, never_gone, spend)
    assert served.model == B and served.attempts == 1
    assert script.calls == [(B, True)]
    assert (await cooldowns.snapshot([A], NOW)).cooling == {}


async def test_a_walk_held_back_everywhere_answers_the_holds_own_429():
    attempts, _, _ = walk()

    async def spend(model: str) -> Held:
        return Held(NOW + 60)

    with pytest.raises(RateLimited) as raised:
        await attempts.first_success([A], Script(), never_gone, spend)
    assert raised.value.message == Held(0).message and raised.value.attempts == 0


async def test_payment_required_narrows_the_walk_to_zero_priced_models():
    attempts, _, _ = walk(entry(A), entry(B), entry(C, price="0"))
    script = Script(vendor_a=[UpstreamRejected(402, "Insufficient credits")])
    served = await attempts.first_success([A, B, C], script, never_gone)
    assert served.model == C
    assert [model for model, _ in script.calls] == [A, C]


async def test_a_too_long_input_narrows_the_walk_to_longer_contexts():
    attempts, _, _ = walk(entry(A, context=4096), entry(B, context=4096), entry(C, context=32768))
    too_long = UpstreamRejected(400, "This model's maximum context length is 4096 tokens")
    served = await attempts.first_success([A, B, C], Script(vendor_a=[too_long]), never_gone)
    assert served.model == C


async def test_a_too_long_input_with_no_longer_model_is_relayed():
    attempts, _, _ = walk(entry(A, context=4096), entry(B, context=4096))
    too_long = UpstreamRejected(400, "This model's maximum context length is 4096 tokens")
    with pytest.raises(UpstreamRejected) as raised:
        await attempts.first_success([A, B], Script(vendor_a=[too_long]), never_gone)
    assert raised.value is too_long and too_long.attempts == 1


async def test_no_candidate_is_an_invalid_request():
    attempts, _, _ = walk()
    with pytest.raises(InvalidRequest):
        await attempts.first_success([], Script(), never_gone)


async def test_the_attempt_limit_ends_the_walk_and_the_last_attempt_knows_it():
    attempts, _, _ = walk(max_attempts=2)
    script = Script(vendor_a=[UpstreamTimeout("a")], vendor_b=[UpstreamTimeout("b")])
    with pytest.raises(UpstreamTimeout) as raised:
        await attempts.first_success([A, B, C], script, never_gone)
    assert script.calls == [(A, False), (B, True)]
    assert raised.value.attempts == 2
