"""The database going away or locked under a running server (DESIGN §7), end to end: the
real proxy (the `serve` process, or uvicorn in this process where a test sets the usage
queue's bound) in front of the fake OpenRouter, keys made by the real CLI on its path."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.live_server import LiveServer
from tests.test_e2e_team import bearer, chat, create_key, serve_process
from tests.test_team_cli import ROOT, one_error_line, run_cli

ADMIN = "admin-secret-for-database-tests"
T = TypeVar("T")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "proxy.db"


def wait_for(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll `condition` until it returns something true; fail naming `what` at the deadline
    (generous: it checks that the change comes, on a loaded machine too, not how fast)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def delete_database(db: Path) -> None:
    for path in (db, db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm")):
        path.unlink()


def records_of(db: Path, key: str) -> int:
    """Usage records of `key` in the file at `db` now (read-only: it creates nothing)."""
    if not db.exists():
        return 0
    connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return int(
            connection.execute("SELECT COUNT(*) FROM usage WHERE key = ?", (key,)).fetchone()[0]
        )
    except sqlite3.Error:
        return 0
    finally:
        connection.close()


def not_ready(url: str) -> httpx.Response | None:
    answer = httpx.get(f"{url}/readyz")
    return answer if answer.status_code == 503 else None


def test_a_database_deleted_while_serving_is_named_and_replaced_by_the_next_one(
    fake_server: LiveServer, db: Path
):
    alice = create_key(db, "alice")
    with serve_process(db, fake_server.url) as (url, process):
        assert chat(url, alice).status_code == 200
        wait_for(lambda: records_of(db, "alice") == 1, "the first record in the first file")
        assert httpx.get(f"{url}/readyz").status_code == 200

        delete_database(db)
        ready = wait_for(lambda: not_ready(url), "/readyz to turn 503")
        assert ready.json()["failing"] == ["database"]
        detail = ready.json()["checks"]["database"]["detail"]
        assert f"database {db} was deleted" in detail

        # Served from the keys last read: alice's key works, and no key is not open mode.
        while_gone = [chat(url, alice).status_code for _ in range(3)]
        assert while_gone == [200, 200, 200]
        assert chat(url).status_code == 401
        assert not db.exists()  # nothing went to a new file the server made itself

        # `keys list` makes an empty database with the schema there: the server reads it
        # (alice is not in it), yet an empty key set after keys is still not open mode.
        assert run_cli("keys", "list", db=db).returncode == 0
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the new database")
        assert chat(url, alice).status_code == 401
        assert chat(url).status_code == 401

        bob = create_key(db, "bob")
        wait_for(
            lambda: httpx.get(f"{url}/v1/usage", headers=bearer(bob)).status_code == 200,
            "the server to read bob's key",
        )
        assert chat(url, bob).status_code == 200
        # The records made while the database was gone were written to the new one.
        wait_for(lambda: records_of(db, "alice") == 3, "the queued records in the new file")
        wait_for(lambda: records_of(db, "bob") == 1, "bob's record")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=15)
    assert process.returncode == 0 and "Traceback" not in errors
    assert f"database {db} was deleted while the server was using it" in errors
    assert f"database {db} is back" in errors
    # Closing the connections to the deleted file touched nothing of the new one at the path.
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = [row[0] for row in connection.execute("SELECT name FROM keys")]
    finally:
        connection.close()
    assert names == ["bob"]
    assert (records_of(db, "alice"), records_of(db, "bob")) == (3, 1)


def test_records_past_the_queue_bound_are_dropped_counted_and_logged(
    start_proxy: ProxyFactory, db: Path, caplog: pytest.LogCaptureFixture
):
    alice = create_key(db, "alice")
    admin = bearer(ADMIN)
    with caplog.at_level(logging.INFO), start_proxy(db_path=db, admin_key=ADMIN) as proxy:
        proxy.app.state.services.team.usage.limit = 2  # the seam: a bound a test can reach
        delete_database(db)
        wait_for(lambda: not_ready(proxy.url), "/readyz to turn 503")
        assert [chat(proxy.url, alice).status_code for _ in range(5)] == [200] * 5
        metrics = httpx.get(f"{proxy.url}/metrics", headers=admin).text
        assert "openrouter_proxy_usage_dropped_total 3.0" in metrics
        assert "openrouter_proxy_usage_queue_depth 2.0" in metrics
        # Stopped (the lifespan's shutdown, as on SIGTERM) with the database still gone.
    lines = [r.getMessage() for r in caplog.records]
    assert any("dropping new ones" in line for line in lines), lines
    assert any("usage: 2 records lost at shutdown" in line for line in lines), lines
    assert not db.exists()


@contextmanager
def exclusive_lock(db: Path) -> Iterator[None]:
    """Another process holds `BEGIN EXCLUSIVE` on the database until the block ends."""
    script = (
        "import sqlite3, sys\n"
        "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "connection.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate(timeout=10)  # closing its stdin ends it, and the lock


def test_a_locked_database_is_a_503_naming_it_and_one_cli_line(start_proxy: ProxyFactory, db: Path):
    create_key(db, "alice")
    admin = bearer(ADMIN)
    with start_proxy(db_path=db, admin_key=ADMIN) as proxy:
        with exclusive_lock(db):
            command = subprocess.Popen(
                [sys.executable, "-m", "app", "keys", "create", "bob"],
                env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PROXY_DB_PATH": str(db)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            answer = httpx.post(
                f"{proxy.url}/admin/keys", json={"name": "carol"}, headers=admin, timeout=30
            )
            out, err = command.communicate(timeout=30)
        after = httpx.post(f"{proxy.url}/admin/keys", json={"name": "carol"}, headers=admin)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "database_unavailable"
    assert f"database {db} is locked by another process" in error["message"]
    cli = subprocess.CompletedProcess(command.args, command.returncode, out, err)
    assert one_error_line(cli).startswith(f"openrouter-proxy: database {db} is locked")
    assert out == ""
    assert after.status_code == 201  # the lock gone, the same call succeeds
