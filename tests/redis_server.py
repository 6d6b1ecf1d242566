"""A throwaway `redis-server` for the test session (DESIGN §10) on a free loopback port,
with a password so tests can check it never shows, no persistence, stopped by its PID.

Each test gets its own database number (the server is started with many), emptied when
handed out, so tests never see each other's keys. Without the binary a test skips naming
the apt package, or fails when `CI=true` (CI installs it: `.ci/run`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from app.shared.connection import Shared
from tests.pg import free_port

PASSWORD = "redis-test-password-never-shown"
NEEDS = "needs redis-server: apt-get install redis-server"
DATABASES = 4096


def require() -> str:
    """The redis-server binary; skip (or fail in CI) naming the apt package when absent."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{NEEDS} (.ci/run installs it; CI must not skip)")
    pytest.skip(NEEDS)


class RedisServer:
    """`start()` a server, `stop()` it (both may repeat on the same port: a test kills
    Redis under running replicas and starts it again)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._databases = itertools.count(1)

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                str(DATABASES),
                "--requirepass",
                PASSWORD,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server by its PID (as a crash would) and wait until it is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def url(self, database: int) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An emptied database of its own: its redis:// URL, password included."""
        database = next(self._databases) % DATABASES
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"AUTH {PASSWORD}\r\nSELECT {database}\r\nFLUSHDB\r\n".encode())
            answer = b""
            while answer.count(b"\r\n") < 3:
                answer += sock.recv(1024)
        return self.url(database)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                return b"+PONG" in sock.recv(1024) or b"+PONG" in sock.recv(1024)
        except OSError:
            return False


@asynccontextmanager
async def shared_for(request: pytest.FixtureRequest) -> AsyncIterator[Shared]:
    """For a contract test parametrized over stores: a client on an emptied database when
    the store under test is "redis" (closed after the test), else one never connected."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else "redis://"
    shared = Shared(url, "orp:")
    try:
        yield shared
    finally:
        await shared.aclose()
