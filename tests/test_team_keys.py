"""Keys: secrets shown once and stored only hashed; the key ring that authenticates requests."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading

import pytest

from app.errors import InvalidKey, InvalidRequest, KeyExists, NotFound
from app.team.auth import REFRESH_INTERVAL, KeyRing
from app.team.db import SCHEMA_VERSION, open_database
from app.team.keys import KeyTable

SECRET = re.compile(r"sk-proxy-[A-Za-z0-9_-]{32,}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def path(tmp_path):
    return tmp_path / "proxy.db"


@pytest.fixture
def store(path):
    store = KeyTable(open_database(path))
    yield store
    store.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ring(path, store, clock):
    ring = KeyRing(open_database(path), clock=clock)
    yield ring
    ring.close()


def database_bytes(path) -> bytes:
    """The database and its WAL files: everything SQLite wrote to disk."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_secret_is_shown_once_and_only_its_hash_is_stored(store, path):
    secret = store.create("alice", rpm=10)
    assert SECRET.fullmatch(secret)
    stored = database_bytes(path)
    assert secret.encode() not in stored
    assert secret[len("sk-proxy-") :].encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_two_keys_never_share_a_secret(store):
    assert store.create("a") != store.create("b")


def test_list_shows_limits_and_a_prefix_not_the_secret(store):
    secret = store.create("alice", rpm=2, tpd=1000, models=["*:free", " meta/* "], paid=True)
    (key,) = store.list()
    assert secret.startswith(key.prefix) and len(key.prefix) < 16
    assert key.limits == {"rpm": 2, "rpd": None, "tpd": 1000, "concurrency": None}
    assert key.models == ("*:free", "meta/*")
    assert key.paid and key.revoked is None
    assert secret not in repr(key.public())


def test_duplicate_name_is_refused_even_after_revoke(store):
    store.create("alice")
    with pytest.raises(KeyExists, match="'alice' already exists"):
        store.create("alice")
    store.revoke("alice")
    with pytest.raises(KeyExists):
        store.create("alice")


@pytest.mark.parametrize("name", ["", "has space", "quote'", "line\nbreak", "-dash", "x" * 65])
def test_names_that_could_forge_a_log_line_are_refused(store, name):
    with pytest.raises(InvalidRequest, match="invalid key name"):
        store.create(name)


@pytest.mark.parametrize("limit", ["rpm", "rpd", "tpd", "concurrency"])
def test_a_limit_below_one_is_refused(store, limit):
    with pytest.raises(InvalidRequest, match=limit):
        store.create("alice", **{limit: 0})


def test_revoke_keeps_the_key_listed_with_its_time(store):
    store.create("alice")
    revoked = store.revoke("alice").revoked
    assert revoked is not None
    assert store.revoke("alice").revoked == revoked  # idempotent
    with pytest.raises(NotFound):
        store.revoke("bob")


def test_open_mode_while_no_key_exists(ring):
    assert ring.open_mode
    caller = ring.authenticate(None, None)
    assert caller.key is None and caller.name is None
    assert ring.authenticate("Bearer anything", None).key is None


def test_key_authenticates_by_bearer_or_x_api_key(ring, store, clock):
    secret = store.create("alice", rpm=5)
    clock.now += REFRESH_INTERVAL
    assert ring.authenticate(f"Bearer {secret}", None).name == "alice"
    assert ring.authenticate(f"bearer  {secret} ", None).name == "alice"
    assert ring.authenticate(None, secret).name == "alice"
    # Clients that send both headers: the valid one wins.
    assert ring.authenticate("Bearer sk-proxy-stale", secret).key.rpm == 5


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "reason"),
    [
        (None, None, "Missing API key"),
        ("Basic abc", None, "Missing API key"),
        ("Bearer sk-proxy-unknown", None, "Invalid API key"),
        (None, "sk-proxy-unknown", "Invalid API key"),
    ],
)
def test_missing_or_unknown_key_is_401_saying_how_to_pass_one(
    ring, store, clock, authorization, x_api_key, reason
):
    store.create("alice")
    clock.now += REFRESH_INTERVAL
    with pytest.raises(InvalidKey) as caught:
        ring.authenticate(authorization, x_api_key)
    error = caught.value
    assert error.status_code == 401
    assert error.body()["error"]["type"] == "authentication_error"
    assert error.body()["error"]["code"] == "invalid_api_key"
    assert reason in error.message and "Authorization: Bearer sk-proxy-" in error.message


def test_revoking_the_last_key_does_not_reopen_the_proxy(ring, store, clock):
    secret = store.create("alice")
    store.revoke("alice")
    clock.now += REFRESH_INTERVAL
    assert not ring.open_mode
    with pytest.raises(InvalidKey, match="'alice' was revoked"):
        ring.authenticate(f"Bearer {secret}", None)
    with pytest.raises(InvalidKey, match="Missing API key"):
        ring.authenticate(None, None)


def test_ring_reads_the_database_at_most_once_per_interval(ring, store, clock):
    """Between checks a request costs a dict lookup: no SQL statement at all."""
    secret = store.create("alice")
    clock.now += REFRESH_INTERVAL
    ring.authenticate(f"Bearer {secret}", None)
    statements: list[str] = []
    ring._db.set_trace_callback(statements.append)
    for _ in range(100):
        ring.authenticate(f"Bearer {secret}", None)
    assert statements == []
    store.revoke("alice")
    ring.authenticate(f"Bearer {secret}", None)  # still inside the interval: not yet seen
    clock.now += REFRESH_INTERVAL
    with pytest.raises(InvalidKey, match="revoked"):
        ring.authenticate(f"Bearer {secret}", None)
    assert statements[0] == "PRAGMA data_version"


def test_unchanged_database_is_not_reloaded(ring, store, clock):
    store.create("alice")
    clock.now += REFRESH_INTERVAL
    assert not ring.open_mode  # loads alice
    statements: list[str] = []
    ring._db.set_trace_callback(statements.append)
    clock.now += REFRESH_INTERVAL
    assert not ring.open_mode
    assert statements == ["PRAGMA data_version"]


def test_schema_is_versioned_and_reopening_migrates_nothing(path):
    open_database(path).close()
    connection = open_database(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"keys", "usage"} <= tables
    connection.close()


def test_keys_survive_reopening(path):
    store = KeyTable(open_database(path))
    store.create("alice", rpd=3)
    store.close()
    again = KeyTable(open_database(path))
    assert [k.rpd for k in again.list()] == [3]
    again.close()


def test_concurrent_writer_waits_instead_of_failing(path, store):
    """busy_timeout: a second connection's write waits for the first's transaction."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO keys (hash, name, prefix, created) VALUES ('h', 'x', 'p', 0)")
    threading.Timer(0.2, lambda: other.execute("COMMIT")).start()
    store.create("alice")  # would raise "database is locked" without busy_timeout
    assert {k.name for k in store.list()} == {"x", "alice"}
    other.close()
