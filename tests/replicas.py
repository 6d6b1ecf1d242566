"""Several proxy replicas as real processes (DESIGN §10, §12): `python -m app serve` each.

A test that needs more than one proxy (nginx in front of two, replicas sharing a database
or Redis) starts them here rather than as threads, so that nothing is shared but what the
settings share:

    with Replicas(2, replica_env(fake_server.url, PROXY_DB_PATH=str(db)), tmp_path) as group:
        httpx.get(f"{group[0].url}/healthz")

Each replica gets its own free loopback port and log file (stdout and stderr together), the
same environment, and a working directory without a `.env`. `stop` sends SIGTERM to that
replica's PID only and waits for it; leaving the `with` stops every replica still running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tests.fake_openrouter import FAKE_KEY

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0  # two or three interpreters importing the app on a loaded 2-core box
STOP_TIMEOUT = 15.0  # serve's grace period for open streams is shorter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replica_env(upstream_url: str, **settings: str) -> dict[str, str]:
    """The environment of a replica in front of the fake at `upstream_url`: this checkout's
    `app`, the fake's key, a generous free allowance (as tests/conftest.make_settings), then
    `settings` (PROXY_DB_PATH, PROXY_REDIS_URL, ...). Nothing else of the caller's
    environment, so no PROXY_* or OPENROUTER_* variable of the shell leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{upstream_url}/api/v1",
        "PROXY_UPSTREAM_RPM": "100000",
        "PROXY_UPSTREAM_RPD": "1000000",
    }
    return env | settings


@dataclass
class Replica:
    index: int
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the replica wrote so far (its request lines included)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None


class Replicas:
    """Context manager: `count` replicas started together, each answering /healthz on exit
    of `__enter__`, stopped by PID with SIGTERM on `__exit__`."""

    def __init__(
        self,
        count: int,
        env: Mapping[str, str],
        workdir: Path,
        *,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.count = count
        self.env = dict(env)
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.replicas: list[Replica] = []

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def logs(self) -> str:
        """Every replica's log, labelled: for assertion messages."""
        return "\n".join(f"--- replica {r.index} ({r.address})\n{r.log()}" for r in self)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            port = free_port()
            log_path = self.workdir / f"replica-{index}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"]
                    + ["--port", str(port)],
                    env=self.env,
                    cwd=self.workdir,  # no .env here
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.replicas.append(Replica(index, port, process, log_path))
        deadline = time.monotonic() + self.start_timeout
        for replica in self.replicas:
            self._wait_healthy(replica, deadline)

    def _wait_healthy(self, replica: Replica, deadline: float) -> None:
        while True:
            if not replica.running():
                raise RuntimeError(f"replica {replica.index} exited:\n{replica.log()}")
            try:
                if httpx.get(f"{replica.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {replica.index} not healthy:\n{replica.log()}")
            time.sleep(0.1)

    def stop(self, replica: Replica) -> int:
        """SIGTERM to this replica's PID, then its exit status (killed after STOP_TIMEOUT)."""
        if replica.running():
            replica.process.send_signal(signal.SIGTERM)
            try:
                return replica.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                replica.process.kill()
        return replica.process.wait()

    def __enter__(self) -> Replicas:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for replica in self.replicas:
            self.stop(replica)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
