"""`keys create|list|revoke` and `usage` on the command line, on the server's database file;
and the one-line error for a database that cannot be used."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.errors import DatabaseError
from app.main import create_app
from app.team.auth import REFRESH_INTERVAL, KeyRing
from app.team.database import open_stores
from app.team.db import open_database
from app.team.usage import UsageRecord
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.polling import wait_until
from tests.read_only import can_mount, needs_mount, run_with_read_only
from tests.test_cli import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, db: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PROXY_DB_PATH": str(db)},
        cwd=cwd or (db.parent if db.parent.is_dir() else ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_main(*args: str, db: Path, monkeypatch, capsys) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli.main), for the cases that need no second one."""
    monkeypatch.setenv("PROXY_DB_PATH", str(db))
    status = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.fixture
def db(tmp_path):
    return tmp_path / "proxy.db"


def test_create_prints_only_the_secret(db):
    result = run_cli("keys", "create", "alice", "--rpm", "10", "--models", "*:free,a/*", db=db)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"sk-proxy-[A-Za-z0-9_-]{32,}\n", result.stdout)
    secret = result.stdout.strip()
    stored = b"".join(p.read_bytes() for p in db.parent.glob("proxy.db*"))
    assert secret.encode() not in stored

    listing = run_cli("keys", "list", db=db)
    assert listing.returncode == 0
    assert "alice" in listing.stdout and secret[:12] in listing.stdout
    assert secret not in listing.stdout

    (key,) = json.loads(run_cli("keys", "list", "--json", db=db).stdout)
    assert key["limits"] == {"rpm": 10, "rpd": None, "tpd": None, "concurrency": None}
    assert key["models"] == ["*:free", "a/*"] and key["paid"] is False
    assert key["prefix"] == secret[:12] and key["revoked"] is None


def test_revoke_and_the_errors_of_key_commands(db, monkeypatch, capsys):
    def run_cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
        return run_main(*args, db=db, monkeypatch=monkeypatch, capsys=capsys)

    assert run_cli("keys", "create", "alice", "--paid", db=db).returncode == 0
    duplicate = one_error_line(run_cli("keys", "create", "alice", db=db))
    assert "'alice' already exists" in duplicate
    assert run_cli("keys", "revoke", "alice", db=db).returncode == 0
    (key,) = json.loads(run_cli("keys", "list", "--json", db=db).stdout)
    assert key["revoked"] is not None and key["paid"] is True
    assert "no key named 'bob'" in one_error_line(run_cli("keys", "revoke", "bob", db=db))
    assert "invalid key name" in one_error_line(run_cli("keys", "create", "a b", db=db))
    # Larger than SQLite's INTEGER: one line, not an OverflowError's traceback.
    too_large = one_error_line(run_cli("keys", "create", "c", "--rpm", str(2**70), db=db))
    assert (
        too_large == f"openrouter-proxy: rpm must be a whole number from 1 to {2**63 - 1} "
        "(leave it out for no limit)"
    )


def test_usage_table_and_json(db, monkeypatch, capsys):
    def run_cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
        return run_main(*args, db=db, monkeypatch=monkeypatch, capsys=capsys)

    import asyncio

    async def write() -> None:
        async with open_stores(db) as (_, usage):
            await usage.write([
                UsageRecord(time.time(), "alice", "/v1/chat/completions", "free", model, 1,
                            200, False, "miss", 10, 20, 0.25, 3.0, None)
                for model in ("a/m:free", "a/m:free", "b/m")
            ])  # fmt: skip

    asyncio.run(write())
    rows = json.loads(run_cli("usage", "--json", "--days", "1", db=db).stdout)
    assert [(r["key"], r["model"], r["requests"], r["cost"]) for r in rows] == [
        ("alice", "a/m:free", 2, 0.5),
        ("alice", "b/m", 1, 0.25),
    ]
    assert list(rows[0]) == [  # DESIGN §2, exactly
        "day", "key", "model", "requests", "errors", "cache_hits", "prompt_tokens",
        "completion_tokens", "cost",
    ]  # fmt: skip
    table = run_cli("usage", "--key", "alice", db=db).stdout.splitlines()
    assert table[0].split() == "KEY MODEL REQUESTS ERRORS HITS PROMPT COMPLETION COST".split()
    assert table[1].split()[:3] == ["alice", "a/m:free", "2"]
    assert run_cli("usage", "--key", "bob", "--json", db=db).stdout.strip() == "[]"


def test_key_ring_sees_a_key_created_and_revoked_by_another_process(db):
    """The ring of a running server notices the CLI's change at its next check, which
    comes at most REFRESH_INTERVAL after the last: the clock is advanced by exactly that."""
    now = [0.0]
    ring = KeyRing(open_database(db), clock=lambda: now[0])
    try:
        assert ring.open_mode
        secret = run_cli("keys", "create", "alice", db=db).stdout.strip()
        now[0] += REFRESH_INTERVAL
        assert ring.authenticate(f"Bearer {secret}", None).name == "alice"
        assert run_cli("keys", "revoke", "alice", db=db).returncode == 0
        now[0] += REFRESH_INTERVAL
        with pytest.raises(Exception, match="revoked"):
            ring.authenticate(f"Bearer {secret}", None)
    finally:
        ring.close()


def test_running_server_requires_a_key_created_by_the_cli(db):
    with LiveServer(create_app(make_settings(db_path=db))) as server:
        assert httpx.get(f"{server.url}/v1/usage").json()["key"] is None  # open mode
        secret = run_cli("keys", "create", "alice", db=db).stdout.strip()
        # Seen within one second by design (REFRESH_INTERVAL); the loop allows a loaded
        # machine more, since it checks that the change arrives, not how fast.
        wait_until(lambda: httpx.get(f"{server.url}/v1/usage").status_code == 401, timeout=5)
        mine = httpx.get(f"{server.url}/v1/usage", headers={"x-api-key": secret})
        assert mine.json()["key"] == "alice"


def corrupt(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database, just some text. " * 100)


def test_corrupted_database_is_one_line_naming_the_file(db, monkeypatch, capsys):
    corrupt(db)
    line = one_error_line(run_cli("keys", "list", db=db))
    assert line.startswith(f"openrouter-proxy: database {db} is not an SQLite database")
    for command in (["keys", "create", "x"], ["keys", "revoke", "x"], ["usage"]):
        again = one_error_line(run_main(*command, db=db, monkeypatch=monkeypatch, capsys=capsys))
        assert again == line


def test_serve_refuses_a_corrupted_database_in_one_line(db):
    corrupt(db)
    result = run_cli("serve", "--port", "9", db=db)
    assert str(db) in one_error_line(result)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda db: db.mkdir(), "is a directory"),
        (lambda db: None, "does not exist"),
    ],
)
def test_unusable_paths_are_one_line(tmp_path, make, expected, monkeypatch, capsys):
    db = tmp_path / "proxy.db" if expected != "does not exist" else tmp_path / "no" / "proxy.db"
    make(db)
    with pytest.raises(DatabaseError, match=expected) as caught:
        open_database(db)
    assert "\n" not in str(caught.value) and str(db) in str(caught.value)
    result = run_main("keys", "list", db=db, monkeypatch=monkeypatch, capsys=capsys)
    assert expected in one_error_line(result)


@pytest.mark.skipif(
    os.geteuid() == 0 and not can_mount(),
    reason="root needs unshare -m (CAP_SYS_ADMIN) to mount the file read-only",
)
def test_read_only_file_is_one_line(db):
    """A database file that cannot be written. File modes do not bind root, so as root the
    file alone is bind-mounted read-only (a Docker volume `-v ./proxy.db:/data/proxy.db:ro`)
    with its folder writable; as another user, its modes say so."""
    assert run_cli("keys", "create", "alice", db=db).returncode == 0
    if os.geteuid() == 0:
        argv = [sys.executable, "-m", "app", "keys", "list"]
        result = run_with_read_only(db, argv, {"PROXY_DB_PATH": str(db)})
    else:
        for path in db.parent.glob("proxy.db*"):
            path.chmod(0o444)
        db.parent.chmod(0o555)
        try:
            result = run_cli("keys", "list", db=db, cwd=ROOT)
        finally:
            db.parent.chmod(0o755)
    line = one_error_line(result)
    assert line.startswith(f"openrouter-proxy: database {db} is read-only")


@needs_mount
def test_read_only_filesystem_is_one_line(db):
    """A read-only mount, which binds root too (a Docker volume mounted `:ro`)."""
    assert run_cli("keys", "create", "alice", db=db).returncode == 0
    argv = [sys.executable, "-m", "app", "keys", "list"]
    result = run_with_read_only(db.parent, argv, {"PROXY_DB_PATH": str(db)})
    line = one_error_line(result)
    assert line.startswith(f"openrouter-proxy: database {db} is read-only")


def test_once_a_key_exists_the_server_may_bind_every_interface(db):
    """DESIGN §7: only open mode (no key ever created) is confined to loopback."""
    assert run_cli("keys", "create", "alice", db=db).returncode == 0
    assert run_cli("keys", "revoke", "alice", db=db).returncode == 0  # still not open
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PROXY_DB_PATH": str(db)},
        cwd=db.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/usage", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve refused to start"
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert answer.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
