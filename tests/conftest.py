"""A handful of fixtures: the fake OpenRouter and the proxy, each a real server on 127.0.0.1."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from openai import OpenAI

from app.config import Settings
from app.main import create_app
from tests.fake_openrouter import FAKE_KEY, FakeOpenRouter
from tests.live_server import LiveServer
from tests.pg import PostgresCluster, require
from tests.redis_server import RedisServer
from tests.redis_server import require as require_redis

CLIENT_KEY = "sk-client-secret-never-forwarded"

# Each proxy a test builds gets its own SQLite file (keys, usage): a key one test creates
# never closes another's open mode, and nothing lands in ./openrouter-proxy.db.
_DB_DIR = Path(tempfile.mkdtemp(prefix="openrouter-proxy-tests-"))
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
_DB_FILES = itertools.count()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under `CI=true` a skip is a failure (DESIGN §10): CI installs every tool a test needs,
    so a test that skips there is one that silently stopped running. Without `CI` (the
    README's test command on a bare machine) a skip stays a skip, its reason saying what
    to install. xfail, which pytest reports as a skip, is left alone."""
    return _no_skip_under_ci((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report() -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """The same for a whole module skipped at import (`pytest.importorskip`)."""
    return _no_skip_under_ci((yield))


Report = TypeVar("Report", pytest.TestReport, pytest.CollectReport)


def _no_skip_under_ci(report: Report) -> Report:
    if report.skipped and not hasattr(report, "wasxfail") and _ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and CI=true allows no skip: {reason}"
    return report


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio tests on asyncio only: the app and uvicorn target asyncio."""
    return "asyncio"


def make_settings(upstream_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    """Settings for a test: no `.env`, the fake's key and address, then `overrides`."""
    values: dict[str, Any] = {
        "openrouter_api_key": FAKE_KEY,
        "openrouter_base_url": f"{upstream_url}/api/v1",
        "db_path": _DB_DIR / f"proxy-{next(_DB_FILES)}.db",
        # The account's free allowance is generous unless a test is about it: most tests
        # send more `:free` requests a minute than the real 20.
        "upstream_rpm": 100_000,
        "upstream_rpd": 1_000_000,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway Postgres cluster for the session (tests/pg.py); skips without it, or
    fails when CI=true."""
    cluster = PostgresCluster(require())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new empty database in that cluster: its postgresql:// URL, password included."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server for the session (tests/redis_server.py); skips without it,
    or fails when CI=true."""
    server = RedisServer(require_redis())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An emptied database of its own in that server: its redis:// URL, password included."""
    return redis_server.new_database()


@pytest.fixture
def fake() -> FakeOpenRouter:
    return FakeOpenRouter()


@pytest.fixture
def fake_server(fake: FakeOpenRouter) -> Iterator[LiveServer]:
    with LiveServer(fake.app) as server:
        yield server


ProxyFactory = Callable[..., Any]


@pytest.fixture
def start_proxy(fake_server: LiveServer) -> ProxyFactory:
    """`with start_proxy(max_wait=0) as proxy:` a real proxy in front of the fake."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[LiveServer]:
        settings = make_settings(fake_server.url, **overrides)
        with LiveServer(create_app(settings)) as server:
            yield server

    return start


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Iterator[LiveServer]:
    with start_proxy() as server:
        yield server


@pytest.fixture
def client(proxy: LiveServer) -> Iterator[OpenAI]:
    """The real openai SDK pointed at the proxy, with its own retries off."""
    with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as sdk:
        yield sdk
