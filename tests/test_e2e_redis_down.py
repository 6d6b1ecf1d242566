"""Redis unreachable (DESIGN §12, `PROXY_REDIS_FAIL`): real replicas (uvicorn on 127.0.0.1)
on a redis-server of their own that the test kills by its PID and starts again on the same
port, in front of the fake OpenRouter. No replica crashes or hangs; `degraded` keeps the
replicas within the key's limits together, `closed` refuses inference with an OpenAI-shaped
503, `open` uses full limits; /readyz and the gauge say so; when Redis is back the state is
shared again without a restart and the outage's day counts are in Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.fake_openrouter import SCOUT, FakeOpenRouter
from tests.live_server import LiveServer
from tests.pg import free_port
from tests.redis_server import PASSWORD, RedisServer
from tests.redis_server import require as require_redis
from tests.test_e2e_replicas import start_replicas
from tests.test_e2e_team import CHAT, HI, bearer, create_key

pytestmark = pytest.mark.e2e

BODY = {"model": SCOUT, "messages": HI}
# Every request is answered well within this while Redis is dead (no request hangs).
ANSWER_WITHIN = 2.0
# DESIGN §12: state is shared again within 5 s of Redis answering.
SHARED_AGAIN_WITHIN = 5.0
ADMIN = "admin-key-for-metrics"  # /metrics needs it once client keys exist


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: killing it must not touch other tests' Redis."""
    server = RedisServer(require_redis())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "proxy.db"


def chat(url: str, secret: str) -> httpx.Response:
    """One chat request that must be answered within ANSWER_WITHIN (timing out fails)."""
    return httpx.post(f"{url}{CHAT}", json=BODY, headers=bearer(secret), timeout=ANSWER_WITHIN)


def redis_check(url: str) -> tuple[int, dict[str, object]]:
    ready = httpx.get(f"{url}/readyz", timeout=ANSWER_WITHIN)
    return ready.status_code, ready.json()["checks"]["redis"]


def redis_up_gauge(url: str) -> str:
    text = httpx.get(f"{url}/metrics", headers=bearer(ADMIN), timeout=ANSWER_WITHIN).text
    return next(line for line in text.splitlines() if line.startswith("openrouter_proxy_redis_up"))


def wait_until(predicate: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_degraded_replicas_stay_within_rpm_together_and_share_again_when_redis_returns(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, own_redis: RedisServer
):
    secret = create_key(db, "alice", "--rpm", "10", "--rpd", "100")
    url = own_redis.new_database()
    with ExitStack() as stack:
        one, other = (
            p.url for p in start_replicas(stack, 2, fake_server, db, url, admin_key=ADMIN)
        )
        # Both heartbeats seen: each replica knows there are two.
        wait_until(lambda: all("2 replica(s)" in str(redis_check(u)[1]) for u in (one, other)), 3)
        before = [chat(u, secret).status_code for u in (one, other, one, other)]
        assert before == [200] * 4

        own_redis.stop()
        during = [chat(u, secret) for u in [one, other] * 10]
        admitted = sum(r.status_code == 200 for r in during)
        assert 4 + admitted <= 10  # together, never more than the key's rpm
        assert admitted > 0  # each went on with its share
        refused = [r for r in during if r.status_code == 429]
        assert refused and all("Redis" in r.json()["error"]["message"] for r in refused)
        for u in (one, other):
            status, check = redis_check(u)
            assert status == 200 and check["ok"] is False
            assert PASSWORD not in str(check)
            assert redis_up_gauge(u).endswith(" 0.0")

        own_redis.start()  # same port, empty (no persistence)
        wait_until(lambda: all(redis_check(u)[1]["ok"] for u in (one, other)), SHARED_AGAIN_WITHIN)
        assert all(redis_up_gauge(u).endswith(" 1.0") for u in (one, other))
        usage = httpx.get(f"{one}/v1/usage", headers=bearer(secret)).json()
        assert usage["used"]["rpd"] == admitted  # the outage's day count is back in Redis
        # Shared again: what one replica records, the other sees.
        assert chat(other, secret).status_code == 200
        assert httpx.get(f"{one}/v1/usage", headers=bearer(secret)).json()["used"]["rpd"] == (
            admitted + 1
        )
    assert len(fake.chat_requests()) == 4 + admitted + 1


def test_closed_refuses_inference_with_an_openai_shaped_503_while_health_answers(
    db: Path, fake_server: LiveServer, own_redis: RedisServer
):
    secret = create_key(db, "alice")
    url = own_redis.new_database()
    with ExitStack() as stack:
        (proxy,) = start_replicas(
            stack, 1, fake_server, db, url, redis_fail="closed", admin_key=ADMIN
        )
        assert chat(proxy.url, secret).status_code == 200
        own_redis.stop()
        first = chat(proxy.url, secret)  # the call that finds Redis dead
        refused = chat(proxy.url, secret)
        assert httpx.get(f"{proxy.url}/healthz").status_code == 200
        status, check = redis_check(proxy.url)
        gauge = redis_up_gauge(proxy.url)
    assert first.status_code in (200, 503)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "redis_unavailable" and "Redis" in error["message"]
    assert PASSWORD not in refused.text
    assert status == 503 and check["ok"] is False
    assert gauge.endswith(" 0.0")


def test_open_gives_each_replica_the_full_limits_while_redis_is_away(
    db: Path, fake_server: LiveServer, own_redis: RedisServer
):
    secret = create_key(db, "alice", "--rpm", "10")
    url = own_redis.new_database()
    with ExitStack() as stack:
        one, other = (
            p.url for p in start_replicas(stack, 2, fake_server, db, url, redis_fail="open")
        )
        assert [chat(u, secret).status_code for u in (one, other)] == [200, 200]
        own_redis.stop()
        statuses = [chat(one, secret).status_code for _ in range(11)]
        status, check = redis_check(one)
    assert statuses == [200] * 10 + [429]  # its own window, the full rpm
    assert status == 200 and check["ok"] is False


def test_start_up_with_redis_unreachable_serves_in_the_fail_mode(
    db: Path, fake_server: LiveServer, caplog: pytest.LogCaptureFixture
):
    secret = create_key(db, "alice", "--rpm", "10", "--rpd", "100")
    dead = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.INFO), ExitStack() as stack:
        (proxy,) = start_replicas(stack, 1, fake_server, db, dead)
        answer = chat(proxy.url, secret)
        status, check = redis_check(proxy.url)
    assert answer.status_code == 200
    assert status == 200 and check["ok"] is False
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0]
    assert PASSWORD not in caplog.text


def test_degraded_replicas_share_what_remained_of_the_free_budget_and_add_it_back(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, own_redis: RedisServer
):
    secret = create_key(db, "alice")
    fake.free_rpd = 12  # what OpenRouter's GET /key reports too
    url = own_redis.new_database()
    with ExitStack() as stack:
        one, other = (
            p.url
            for p in start_replicas(
                stack, 2, fake_server, db, url, upstream_rpd=12, admin_key=ADMIN
            )
        )
        wait_until(lambda: all("2 replica(s)" in str(redis_check(u)[1]) for u in (one, other)), 3)
        assert [chat(u, secret).status_code for u in (one, other)] == [200, 200]
        # Each replica's last view of the free budget: 10 left.
        wait_until(lambda: all(free_left(u, secret) == 10 for u in (one, other)), 3)
        own_redis.stop()
        during = [chat(u, secret) for u in [one, other] * 8]
        admitted = sum(r.status_code == 200 for r in during)
        assert admitted == 10  # 10 left, 5 for each of the two replicas
        own_redis.start()
        wait_until(lambda: all(redis_check(u)[1]["ok"] for u in (one, other)), SHARED_AGAIN_WITHIN)
        left = free_left(one, secret)
    # The restarted Redis is empty (no persistence): what it holds is the outage's count.
    assert left == 12 - admitted
    assert len(fake.chat_requests()) == 2 + admitted


def free_left(url: str, secret: str) -> int:
    usage = httpx.get(f"{url}/v1/usage", headers=bearer(secret), timeout=ANSWER_WITHIN).json()
    return int(usage["free_budget"]["account_remaining_today"])
