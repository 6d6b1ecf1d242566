"""Replicas on one Postgres (DESIGN §7, §12), end to end: `serve` processes, each on its own
port, in front of the fake OpenRouter; keys made and usage read by the real command line
against the same Postgres (a throwaway cluster, tests/pg.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import psycopg
import pytest

from tests.fake_openrouter import FAKE_KEY, MISTRAL, SCOUT
from tests.live_server import LiveServer
from tests.pg import PASSWORD, PostgresCluster, require
from tests.test_e2e_database import not_ready, wait_for
from tests.test_e2e_shutdown import free_port, wait_until_up
from tests.test_e2e_team import SEEN_WITHIN, bearer, chat
from tests.test_team_cli import ROOT, one_error_line

ADMIN = "admin-secret-for-replicas"


def environment(url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "PROXY_DATABASE_URL": url,
        # A SQLite file in a folder that does not exist: any use of it would fail.
        "PROXY_DB_PATH": "/nonexistent-openrouter-proxy-folder/proxy.db",
        **extra,
    }


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`openrouter-proxy ARGS…` against the Postgres at `url`."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=environment(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_key(url: str, name: str) -> str:
    result = cli(url, "keys", "create", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def usage_counts(url: str) -> Counter[tuple[str | None, str | None]]:
    result = cli(url, "usage", "--json", "--days", "1")
    assert result.returncode == 0, result.stderr
    return Counter(
        {(row["key"], row["model"]): row["requests"] for row in json.loads(result.stdout)}
    )


@contextmanager
def replica(url: str, fake_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """One `serve` process on its own port, keys and usage in the Postgres at `url`."""
    port = free_port()
    env = environment(
        url,
        OPENROUTER_API_KEY=FAKE_KEY,
        OPENROUTER_BASE_URL=f"{fake_url}/api/v1",
        PROXY_UPSTREAM_RPM="100000",
        PROXY_ADMIN_KEY=ADMIN,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def stop_together(*processes: subprocess.Popen[str]) -> list[str]:
    """SIGTERM to every replica at once; each must exit 0 without a traceback."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    errors = [process.communicate(timeout=30)[1] for process in processes]
    for process, text in zip(processes, errors, strict=True):
        assert process.returncode == 0 and "Traceback" not in text, text
    return errors


def accepted(url: str, secret: str) -> int:
    return httpx.get(f"{url}/v1/usage", headers=bearer(secret)).status_code


def caller(url: str, secret: str) -> str | None:
    """Whom the replica takes the bearer of `secret` for (None: open mode)."""
    answer = httpx.get(f"{url}/v1/usage", headers=bearer(secret))
    return answer.json()["key"] if answer.status_code == 200 else None


def after_a_second(since: float) -> None:
    """Wait until SEEN_WITHIN after `since`: what DESIGN §12 promises comes by then."""
    time.sleep(max(0.0, since + SEEN_WITHIN - time.monotonic()))


def test_two_replicas_on_one_postgres_share_keys_and_usage_and_lose_no_record(
    fake_server: LiveServer, pg_url: str
):
    with ExitStack() as stack:
        (a, process_a), (b, process_b) = (
            stack.enter_context(replica(pg_url, fake_server.url)) for _ in range(2)
        )
        # A key created with the command line is accepted by both within a second.
        alice = create_key(pg_url, "alice")
        carol = create_key(pg_url, "carol")
        after_a_second(time.monotonic())
        assert [caller(url, alice) for url in (a, b)] == ["alice", "alice"]  # not open mode
        assert [chat(url, alice).status_code for url in (a, b)] == [200, 200]
        assert [chat(url, carol).status_code for url in (a, b)] == [200, 200]
        # ... and refused by both within a second of its revocation.
        assert cli(pg_url, "keys", "revoke", "carol").returncode == 0
        after_a_second(time.monotonic())
        assert [accepted(url, carol) for url in (a, b)] == [401, 401]
        # A key made through one replica's /admin/keys is used by the other.
        made = httpx.post(f"{a}/admin/keys", json={"name": "dave"}, headers=bearer(ADMIN))
        assert made.status_code == 201, made.text
        after_a_second(time.monotonic())
        assert caller(b, made.json()["key"]) == "dave"

        # Traffic to both, and SIGTERM at once: the last records are still queued then.
        with httpx.Client(base_url=a, headers=bearer(alice)) as client:
            scout = [client.post("/v1/chat/completions", json=body(SCOUT)) for _ in range(6)]
        with httpx.Client(base_url=b, headers=bearer(alice)) as client:
            mistral = [client.post("/v1/chat/completions", json=body(MISTRAL)) for _ in range(4)]
        assert [r.status_code for r in scout + mistral] == [200] * 10
        stop_together(process_a, process_b)

    counts = usage_counts(pg_url)
    assert counts[("alice", SCOUT)] == 2 + 6
    assert counts[("alice", MISTRAL)] == 4
    assert counts[("carol", SCOUT)] == 2
    assert ("dave", SCOUT) not in counts  # /v1/usage counts toward nothing
    assert records_in(pg_url, "alice") == 12  # in Postgres, record by record


def body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own, for a test that stops and starts the server."""
    cluster = PostgresCluster(require())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def records_in(url: str, key: str) -> int:
    """Usage records of `key` in Postgres now (0 while it is down)."""
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            row = connection.execute("SELECT COUNT(*) FROM usage WHERE key = %s", (key,))
            return int(row.fetchone()[0])
    except psycopg.OperationalError:
        return 0


def test_postgres_stopped_while_serving_is_named_and_the_queued_records_follow(
    fake_server: LiveServer, own_cluster: PostgresCluster
):
    url = own_cluster.new_database()
    where = f"127.0.0.1:{own_cluster.port}"
    alice = create_key(url, "alice")
    with replica(url, fake_server.url) as (proxy, process):
        assert chat(proxy, alice).status_code == 200
        wait_for(lambda: records_in(url, "alice") == 1, "the first record in Postgres")
        assert httpx.get(f"{proxy}/readyz").status_code == 200

        own_cluster.stop("fast")
        ready = wait_for(lambda: not_ready(proxy), "/readyz to turn 503")
        assert ready.json()["failing"] == ["database"]
        detail = ready.json()["checks"]["database"]["detail"]
        assert f"Postgres at {where}" in detail and "PROXY_DATABASE_URL" in detail
        assert PASSWORD not in ready.text
        # Still served, from the keys last read (never open mode).
        assert [chat(proxy, alice).status_code for _ in range(3)] == [200, 200, 200]
        assert chat(proxy).status_code == 401
        admin = httpx.get(f"{proxy}/admin/keys", headers=bearer(ADMIN), timeout=30)
        assert admin.status_code == 503 and admin.json()["error"]["code"] == "database_unavailable"
        assert where in admin.json()["error"]["message"] and PASSWORD not in admin.text

        own_cluster.start()
        wait_for(lambda: records_in(url, "alice") == 4, "the queued records in Postgres")
        wait_for(lambda: httpx.get(f"{proxy}/readyz").status_code == 200, "/readyz back to 200")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in errors
    assert PASSWORD not in errors
    assert f"Postgres at {where}" in errors  # the outage is logged, and its end
    counts = usage_counts(url)
    assert counts[("alice", SCOUT)] == 4


def test_an_unreachable_postgres_at_start_up_is_one_line_without_the_password(
    postgres: PostgresCluster,
):
    port = free_port()  # nothing listens there
    url = f"postgresql://proxy:{PASSWORD}@127.0.0.1:{port}/proxy"
    for args in (["serve", "--port", str(free_port())], ["keys", "list"], ["usage"]):
        result = cli(url, *args)
        line = one_error_line(result)
        assert "PROXY_DATABASE_URL" in line and f"127.0.0.1:{port}" in line, line
        assert PASSWORD not in result.stderr + result.stdout
    # Reachable, but the password is wrong: named the same way, and still not shown.
    wrong = postgres.database_url("postgres").replace(PASSWORD, "not-the-password")
    line = one_error_line(cli(wrong, "keys", "list"))
    assert f"127.0.0.1:{postgres.port}" in line and "password authentication failed" in line
    assert "not-the-password" not in line


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("PROXY_DATABASE_URL", f"mysql://u:{PASSWORD}@h/db", "must start with postgresql://"),
        ("PROXY_USAGE_RETENTION_DAYS", "0", "greater than or equal to 1"),
        ("PROXY_USAGE_RETENTION_DAYS", "a week", "valid integer"),
    ],
)
def test_bad_database_settings_are_one_start_up_line(setting, value, words):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), setting: value}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_error_line(result)
    assert line.startswith(f"openrouter-proxy: invalid setting {setting}: ") and words in line
    assert PASSWORD not in result.stderr
