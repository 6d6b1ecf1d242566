"""POST /v1/messages/count_tokens through the real proxy in front of the fake OpenRouter,
driven by the `anthropic` SDK (DESIGN §4): authenticated like /v1/messages, refused for a
model the key may not use, counted toward no quota and written to no usage record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.fake_openrouter import (
    COUNT_TOKENS_PATH,
    MISTRAL,
    SCOUT,
    SCOUT_PAID,
    FakeOpenRouter,
)
from tests.live_server import LiveServer

ADMIN = "admin-secret-for-count-tokens"
WORDS = [{"role": "user", "content": "count these words please " * 40}]


@contextmanager
def anthropic_sdk(proxy: LiveServer, key: str | None) -> Iterator[anthropic.Anthropic]:
    """The SDK with `key` as `x-api-key`; None sends no key at all."""
    no_key: dict[str, Any] = {"Authorization": anthropic.omit} if key is None else {}
    with anthropic.Anthropic(
        base_url=proxy.url, api_key=key, max_retries=0, default_headers=no_key
    ) as client:
        yield client


def admin(proxy: LiveServer, method: str, path: str, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    answer = httpx.request(method, f"{proxy.url}{path}", json=body or None, headers=headers)
    assert answer.status_code < 300, answer.text
    return answer


def counted(proxy: LiveServer, key: str | None, model: str = SCOUT) -> int:
    with anthropic_sdk(proxy, key) as client:
        return client.messages.count_tokens(model=model, messages=WORDS).input_tokens  # type: ignore[arg-type]


def test_count_tokens_needs_a_valid_key_counts_toward_no_quota_and_writes_no_record(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with start_proxy(admin_key=ADMIN) as proxy:
        limits = {"rpm": 5, "rpd": 10, "tpd": 100_000, "concurrency": 1}
        alice = admin(proxy, "POST", "/admin/keys", name="alice", **limits).json()["key"]
        gone = admin(proxy, "POST", "/admin/keys", name="gone").json()["key"]
        admin(proxy, "DELETE", "/admin/keys/gone")
        refusals = []
        for key in (None, "sk-proxy-made-up-key-0123456789abcdefghijklmnop", gone):
            with pytest.raises(anthropic.AuthenticationError) as refused:
                counted(proxy, key)
            refusals.append(refused.value)
        sent_without_a_valid_key = list(fake.requests_to(COUNT_TOKENS_PATH))
        answers = [counted(proxy, alice) for _ in range(6)]  # more than alice's rpm
        with anthropic_sdk(proxy, alice) as client:
            raw = client.messages.with_raw_response.count_tokens(model=SCOUT, messages=WORDS)  # type: ignore[arg-type]
        usage = httpx.get(f"{proxy.url}/v1/usage", headers={"x-api-key": alice}).json()
        # One real request, whose record shows that the usage writer has caught up.
        with anthropic_sdk(proxy, alice) as client:
            client.messages.create(model=MISTRAL, max_tokens=16, messages=WORDS)  # type: ignore[arg-type]
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not rows and time.monotonic() < deadline:
            rows = admin(proxy, "GET", "/admin/usage").json()["data"]
            time.sleep(0.05)

    for refusal in refusals:
        assert refusal.status_code == 401
        assert isinstance(refusal.body, dict) and refusal.body["type"] == "error"
        assert refusal.body["error"]["type"] == "authentication_error"
    assert "revoked" in refusals[2].message
    assert sent_without_a_valid_key == []  # the operator's key went nowhere
    assert all(answer > 100 for answer in answers)  # the local estimate: 4 bytes a token
    assert len(fake.requests_to(COUNT_TOKENS_PATH)) == 1  # asked once: the fake has no such route
    assert usage["used"] == {"rpm": 0, "rpd": 0, "tpd": 0, "concurrency": 0}
    # A limited key's headers ride on the count too, and show nothing was taken.
    assert raw.headers["x-ratelimit-remaining-requests"] == "5"
    assert raw.parse().input_tokens == answers[0]
    # Neither the refused nor the served counts left a record; the real request did.
    assert [(row["key"], row["model"], row["requests"]) for row in rows] == [("alice", MISTRAL, 1)]


def test_count_tokens_refuses_a_model_the_key_may_not_use(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """The key's model rules bind counting as they bind /v1/messages: a free-only key gets
    403 for a priced model, a key limited to patterns for any model outside them."""
    with start_proxy(admin_key=ADMIN) as proxy:
        free_only = admin(proxy, "POST", "/admin/keys", name="free").json()["key"]
        scout_only = admin(
            proxy, "POST", "/admin/keys", name="scout", paid=True, models=["*scout*"]
        ).json()["key"]
        with pytest.raises(anthropic.PermissionDeniedError) as priced:
            counted(proxy, free_only, SCOUT_PAID)
        with pytest.raises(anthropic.PermissionDeniedError) as outside:
            counted(proxy, scout_only, MISTRAL)
        allowed = [counted(proxy, free_only, SCOUT), counted(proxy, scout_only, SCOUT_PAID)]

    for refusal in priced.value, outside.value:
        assert isinstance(refusal.body, dict) and refusal.body["type"] == "error"
        assert refusal.body["error"]["type"] == "permission_error"
    assert all(answer > 100 for answer in allowed)
    # Only the allowed requests went up (the fake has no such route: 404, then estimates).
    assert [r.json["model"] for r in fake.requests_to(COUNT_TOKENS_PATH)] == [SCOUT]


def test_count_tokens_asks_openrouter_for_a_model_the_key_may_use_until_it_lacks_the_route(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """`free` is no model OpenRouter knows: the count goes up for the first model of the
    key's candidates. Once OpenRouter answers 404, this app estimates without asking."""
    fake.counted_tokens = 42
    with start_proxy(admin_key=ADMIN) as proxy:
        secret = admin(proxy, "POST", "/admin/keys", name="alice", models=[MISTRAL]).json()["key"]
        with anthropic_sdk(proxy, secret) as client:
            served = client.messages.with_raw_response.count_tokens(model="free", messages=WORDS)  # type: ignore[arg-type]
            fake.counted_tokens = None  # OpenRouter's real answer: no such route
            estimates = [counted(proxy, secret, "free") for _ in range(2)]

    assert served.parse().input_tokens == 42
    assert served.headers["x-proxy-model"] == MISTRAL
    assert all(estimate > 100 for estimate in estimates)
    assert [r.json["model"] for r in fake.requests_to(COUNT_TOKENS_PATH)] == [MISTRAL, MISTRAL]
    assert all("x-api-key" not in r.headers for r in fake.requests_to(COUNT_TOKENS_PATH))
