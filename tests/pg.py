"""A throwaway Postgres cluster for the test session (DESIGN §10): Debian's `initdb` and
`pg_ctl` on a free loopback port, with a password so that tests can check it never shows.

`initdb` refuses to run as root and cannot use pytest's 0700 temporary folders, so as root
the tools run as the `postgres` user (`runuser -u postgres`) in a folder that user owns,
with the Unix socket there too. Without the binaries a test skips naming the apt package,
or fails when `CI=true` (CI installs them: `.ci/run`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PASSWORD = "pg-test-password-never-shown"
USER = "proxy"
NEEDS = "needs the Postgres server binaries: apt-get install postgresql"


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin that has initdb and pg_ctl, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def require() -> Path:
    """The binaries' folder; skip (or fail in CI) naming the apt package when absent."""
    found = binaries()
    if found is not None:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{NEEDS} (.ci/run installs it; CI must not skip)")
    pytest.skip(NEEDS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """`start()` a cluster in its own folder, `stop()` it (both may repeat: a test stops
    the server under a running proxy and starts it again), `close()` removes it all."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="openrouter-proxy-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._databases = itertools.count()
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", USER,
            "--pwfile", str(password_file),
            "--auth", "scram-sha-256",
            "--no-sync",
            "-E", "UTF8",
            "--locale", "C",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    @property
    def url(self) -> str:
        """The cluster's own `postgres` database (for CREATE DATABASE)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            # A throwaway cluster: durability off makes every commit cheap.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def new_database(self) -> str:
        """A fresh, empty database in the cluster; its URL (with the password)."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def close(self) -> None:
        deadline = time.monotonic() + 30
        if self.running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)
