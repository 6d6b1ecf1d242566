"""Several replicas, one team (DESIGN §12, issue 25): three real proxies (uvicorn on
127.0.0.1) sharing one throwaway redis-server and one SQLite file, in front of one fake
OpenRouter. What one replica counts, learns or stores, the others see."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply, provider_429
from tests.live_server import LiveServer
from tests.polling import wait_until
from tests.redis_server import PASSWORD
from tests.replicas import Replica, Replicas, replica_env
from tests.test_e2e_team import CHAT, HI, bearer, create_key, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "proxy.db"


def start_replicas(
    stack: ExitStack, n: int, fake_server: LiveServer, db: Path, redis_url: str, **overrides: Any
) -> list[LiveServer]:
    """`n` replicas on one Redis and one database, each a real server."""
    settings = make_settings(fake_server.url, db_path=db, redis_url=redis_url, **overrides)
    replicas = [stack.enter_context(LiveServer(create_app(settings))) for _ in range(n)]
    warm(replicas)
    return replicas


def start_processes(
    stack: ExitStack, n: int, fake_server: LiveServer, db: Path, redis_url: str, workdir: Path
) -> list[Replica]:
    """`n` replicas as `serve` processes (each its own interpreter, as deployed) on one
    Redis and one database: for the bursts, which in-process replicas share one GIL for."""
    env = replica_env(fake_server.url, PROXY_DB_PATH=str(db), PROXY_REDIS_URL=redis_url)
    replicas = list(stack.enter_context(Replicas(n, env, workdir)))
    warm(replicas)
    return replicas


def warm(replicas: Sequence[LiveServer | Replica], connections: int = 8) -> None:
    """Open each replica's Redis connections before a test's burst. Here every replica and
    the clients share one process, so a burst that also had to connect could stall a call
    past the proxy's short Redis timeout and (rightly) fail over to local state, which is
    not what these tests are about; in production each replica is its own process."""
    urls = [replica.url for replica in replicas for _ in range(connections)]
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(lambda url: httpx.get(f"{url}/readyz", timeout=10), urls))
    assert all(answer.status_code == 200 for answer in answers)


def post_all(urls: list[str], secret: str, body: dict[str, object]) -> list[httpx.Response]:
    """One request to each url at once, released together through a barrier."""
    barrier = threading.Barrier(len(urls))

    def one(url: str) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            return client.post(f"{url}{CHAT}", json=body, headers=bearer(secret))

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(one, urls))


def test_ninety_concurrent_requests_over_three_replicas_admit_exactly_rpm(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str, tmp_path: Path
):
    secret = create_key(db, "alice", "--rpm", "10")
    with ExitStack() as stack:
        proxies = start_processes(stack, 3, fake_server, db, redis_url, tmp_path)
        urls = [proxies[n % 3].url for n in range(90)]
        statuses = [r.status_code for r in post_all(urls, secret, {"model": SCOUT, "messages": HI})]
    assert (statuses.count(200), statuses.count(429)) == (10, 80)
    assert len(fake.chat_requests()) == 10


def test_a_cached_answer_from_one_replica_is_a_hit_on_another(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str
):
    secret = create_key(db, "alice")
    body = {"model": SCOUT, "messages": HI, "temperature": 0}
    with ExitStack() as stack:
        one, other = start_replicas(stack, 2, fake_server, db, redis_url)
        first = httpx.post(f"{one.url}{CHAT}", json=body, headers=bearer(secret))
        second = httpx.post(f"{other.url}{CHAT}", json=body, headers=bearer(secret))
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]
    assert len(fake.chat_requests()) == 1


def test_a_model_cooled_by_a_429_through_one_replica_is_skipped_by_the_other(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str
):
    secret = create_key(db, "alice")
    fake.script(SCOUT, provider_429(SCOUT))  # once; then it answers again
    body = {"model": SCOUT, "messages": HI}
    with ExitStack() as stack:
        one, other = start_replicas(stack, 2, fake_server, db, redis_url, max_wait=0)
        assert httpx.post(f"{one.url}{CHAT}", json=body, headers=bearer(secret)).status_code == 429
        cooled = httpx.post(f"{other.url}{CHAT}", json=body, headers=bearer(secret))
    assert cooled.status_code == 429
    assert len(fake.chat_requests()) == 1  # the other replica knew, and did not ask


def test_the_redis_password_never_shows_in_readyz(
    db: Path, fake_server: LiveServer, redis_url: str
):
    with LiveServer(
        create_app(make_settings(fake_server.url, db_path=db, redis_url=redis_url))
    ) as proxy:
        ready = httpx.get(f"{proxy.url}/readyz")
    assert ready.status_code == 200
    assert PASSWORD not in ready.text


def test_the_status_snapshot_counts_the_replicas_alive_by_their_heartbeats(
    db: Path, fake_server: LiveServer, redis_url: str
):
    """Each replica registers at start-up and renews every second; a stopped one stops
    counting within 5 s of its last heartbeat (DESIGN §12)."""

    def replicas(url: str) -> Any:
        snapshot = httpx.get(f"{url}/status/snapshot", timeout=5)
        return snapshot.json()["replicas"]

    with ExitStack() as stack:
        one, *_ = start_replicas(stack, 3, fake_server, db, redis_url)
        poll_until(lambda: replicas(one.url) == {"alive": 3}, 3)
        with ExitStack() as later:
            start_replicas(later, 1, fake_server, db, redis_url)
            poll_until(lambda: replicas(one.url)["alive"] == 4, 3)
        poll_until(lambda: replicas(one.url)["alive"] == 3, 7)


def poll_until(predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_twenty_identical_misses_over_three_replicas_make_one_upstream_call(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str, tmp_path: Path
):
    """Single-flight across replicas: one replica leads, the others wait for its stored
    answer and serve it as a hit (DESIGN §12)."""
    secret = create_key(db, "alice")
    fake.set_default(SCOUT, Reply(first_byte_delay=0.5))  # every miss overlaps the leader's
    body = {"model": SCOUT, "messages": HI, "temperature": 0}
    with ExitStack() as stack:
        proxies = start_processes(stack, 3, fake_server, db, redis_url, tmp_path)
        answers = post_all([proxies[n % 3].url for n in range(20)], secret, body)
    assert [a.status_code for a in answers] == [200] * 20
    assert len(fake.chat_requests()) == 1
    assert sorted(a.headers["x-cache"] for a in answers) == ["HIT"] * 19 + ["MISS"]
    assert len({a.content for a in answers}) == 1


def test_concurrency_2_admits_two_streams_at_a_time_across_three_replicas(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str
):
    secret = create_key(db, "alice", "--concurrency", "2")
    fake.set_default(SCOUT, Reply(chunks=4, chunk_delay=0.3))  # each stream open > 1 s
    body = {"model": SCOUT, "messages": HI, "stream": True}
    with ExitStack() as stack:
        proxies = start_replicas(stack, 3, fake_server, db, redis_url)
        answers = post_all([proxies[n % 3].url for n in range(6)], secret, body)
    statuses = [a.status_code for a in answers]
    assert (statuses.count(200), statuses.count(429)) == (2, 4)
    assert len(fake.chat_requests()) == 2
    assert most_open_at_once(fake) <= 2


def most_open_at_once(fake: FakeOpenRouter) -> int:
    """The most upstream streams the fake had open together (each from its first write to
    its last)."""
    edges = sorted(
        (at, step)
        for parts in fake.sent_parts.values()
        for at, step in ((parts[0][0], 1), (parts[-1][0], -1))
    )
    open_now = most = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_a_free_budget_of_12_is_never_exceeded_and_every_replica_gives_the_same_share(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str
):
    fake.free_rpd = 12  # what OpenRouter's GET /key reports too
    secrets = [create_key(db, name) for name in ("alice", "bob", "carol")]
    with ExitStack() as stack:
        urls = [
            p.url for p in start_replicas(stack, 3, fake_server, db, redis_url, upstream_rpd=12)
        ]
        statuses = [
            chat(url, secret).status_code for _ in range(3) for url in urls for secret in secrets
        ]
        shares = {
            (secret, url): usage(url, secret)["free_budget"]["share"]
            for secret in secrets
            for url in urls
        }
    assert len(fake.chat_requests()) <= 12
    assert statuses.count(200) == len(fake.chat_requests())
    for secret in secrets:
        assert len({shares[secret, url] for url in urls}) == 1, shares


def test_keys_revoke_takes_effect_on_every_replica_within_a_second(
    fake: FakeOpenRouter, db: Path, fake_server: LiveServer, redis_url: str
):
    """The real CLI on the shared database; each replica sees the change by itself (the
    database is the source of truth, DESIGN §12), so this holds with or without Redis."""
    secret = create_key(db, "alice")
    create_key(db, "bob")  # so revoking alice does not leave the proxy without keys
    with ExitStack() as stack:
        urls = [p.url for p in start_replicas(stack, 3, fake_server, db, redis_url)]
        assert [chat(url, secret).status_code for url in urls] == [200] * 3
        assert run_cli("keys", "revoke", "alice", db=db).returncode == 0
        poll_until(lambda: all(chat(url, secret).status_code == 401 for url in urls), 1.0)


def chat(url: str, secret: str) -> httpx.Response:
    body = {"model": SCOUT, "messages": HI}
    return httpx.post(f"{url}{CHAT}", json=body, headers=bearer(secret), timeout=30)


def usage(url: str, secret: str) -> Any:
    return httpx.get(f"{url}/v1/usage", headers=bearer(secret), timeout=30).json()


def test_the_status_snapshot_of_one_replica_shows_the_failures_and_attempts_of_all(
    db: Path, fake_server: LiveServer, redis_url: str
):
    """Each replica publishes its activity to Redis; any replica's page shows the whole
    deployment's within a few seconds (DESIGN §13)."""
    made_up = "nobody/no-such-model"
    with ExitStack() as stack:
        one, other = start_replicas(stack, 2, fake_server, db, redis_url)
        failed = httpx.post(
            f"{one.url}{CHAT}", json={"model": made_up, "messages": HI}, headers=bearer("sk-any")
        )
        assert failed.status_code >= 400
        assert chat(one.url, "sk-any").status_code == 200
        assert chat(other.url, "sk-any").status_code == 200

        def whole_deployment() -> bool:
            snapshot = httpx.get(f"{other.url}/status/snapshot", timeout=5).json()
            attempts = {m["id"]: m["attempts_15m"] for m in snapshot["models"]}
            failures = [f["model"] for f in snapshot["failures"]]
            return attempts.get(SCOUT) == 2 and failures == [made_up]

        wait_until(whole_deployment, 5, "replica A's failure and attempts on replica B's page")
