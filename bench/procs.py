"""Subprocesses under test: start (pinned to a CPU), wait until ready, read /proc, stop.

Only processes started here are ever signalled, by their own PID.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class CpuPlan:
    """Which CPU the system under test gets, and which the fake and the load generator share."""

    server: int | None
    load: int | None

    @classmethod
    def detect(cls, pin: bool) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(cpus[0], cpus[1])

    def prefix(self, cpu: int | None) -> list[str]:
        return [] if cpu is None else ["taskset", "-c", str(cpu)]

    def pin_self(self) -> None:
        if self.load is not None:
            os.sched_setaffinity(0, {self.load})


def _tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn with one worker has none, but be safe)."""
    out = [pid]
    for i, current in enumerate(out):
        if i > 64:
            break
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its descendants, in seconds."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def cpu_busy_seconds(cpu: int | None) -> float:
    """Non-idle time of one CPU (all of them if None) since boot, from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == name:
                # user nice system idle iowait irq softirq steal ...
                busy = sum(int(v) for v in fields[1:4]) + sum(int(v) for v in fields[6:9])
                return busy / CLK_TCK
    return 0.0


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS:") for p in _tree(pid))


def hwm_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmHWM:") for p in _tree(pid))


class RssSampler:
    """Samples VmRSS every `interval_s` until stopped; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_kib = rss_kib(pid)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:  # cancelled by stop(); each loop sleeps
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            await asyncio.sleep(self.interval_s)

    def start(self) -> RssSampler:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
        return self.peak_kib


@dataclass
class Server:
    """One subprocess serving HTTP on 127.0.0.1:port."""

    name: str
    argv: Sequence[str]
    port: int
    env: Mapping[str, str]
    cwd: Path
    health_path: str = "/healthz"
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None
    t0: float = 0.0  # perf_counter() just before the process was spawned
    log_path: Path | None = None
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, log_dir: Path) -> float:
        """Start and wait for the first 200 on the health path; return seconds taken."""
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        log = open(self.log_path, "wb")  # closed in stop()
        self._log = log
        t0 = self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = self.base_url + self.health_path
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.perf_counter() - t0 < READY_TIMEOUT_S:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}: {self.tail_log()}"
                    )
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            await resp.read()
                            self.startup_s = time.perf_counter() - t0
                            return self.startup_s
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.005)
        raise RuntimeError(
            f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s: {self.tail_log()}"
        )

    def tail_log(self, limit: int = 1500) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode(errors="replace").strip()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        log = self._log
        if log is not None:
            log.close()  # type: ignore[attr-defined]
            self._log = None


class RedisProcess:
    """A throwaway `redis-server` on a loopback port (no persistence), for the keyed proxy
    with its state in Redis; stopped by its own PID."""

    def __init__(self, prefix: Sequence[str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: apt-get install redis-server")
        argv = [*prefix, binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(cwd)]  # fmt: skip
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=quiet, stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self._ask(b"PING") != b"+PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def _ask(self, command: bytes) -> bytes:
        """One inline command; its status line or bulk string (b"" if Redis does not answer)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(command + b"\r\n")
                reply = b""
                while b"\r\n" not in reply or (
                    reply.startswith(b"$") and len(reply) < _bulk_end(reply)
                ):
                    chunk = s.recv(65536)
                    if not chunk:
                        return b""
                    reply += chunk
        except OSError:
            return b""
        head, _, rest = reply.partition(b"\r\n")
        return rest.strip() if head.startswith(b"$") else head

    def calls(self) -> tuple[int, int]:
        """(commands, scripts) Redis has processed (INFO commandstats, INFO itself left out):
        a command inside a script counts too, a script is one round trip."""
        commands = scripts = 0
        for line in self._ask(b"INFO commandstats").splitlines():
            name, _, stats = line.partition(b":")
            if not name.startswith(b"cmdstat_") or name == b"cmdstat_info":
                continue
            calls = int(stats.split(b",")[0].partition(b"=")[2])
            commands += calls
            if name in (b"cmdstat_evalsha", b"cmdstat_eval"):
                scripts += calls
        return commands, scripts

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _bulk_end(reply: bytes) -> int:
    """How long a RESP bulk-string reply (`$n\\r\\n` + n bytes + `\\r\\n`) is in all."""
    head = reply.partition(b"\r\n")[0]
    return len(head) + 2 + int(head[1:]) + 2


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment without proxy settings, plus `extra` and PYTHONPATH=repo."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROXY_", "OPENROUTER_", "BENCH_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def uvicorn_argv(factory: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
