"""The command line: refuses an open bind, checks the upstream, fails in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_openrouter import CATALOGUE, FAKE_KEY
from tests.live_server import LiveServer


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "my-host.example"])
def test_non_loopback_bind_without_keys_is_refused_in_one_line(tmp_path, host):
    result = run_cli("serve", "--host", host, cwd=tmp_path, OPENROUTER_API_KEY="sk-or-v1-x")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"openrouter-proxy: refusing to serve on {host}")
    assert "PROXY_ALLOW_OPEN=true" in line
    assert "Traceback" not in result.stderr


def test_allow_open_serves_on_all_interfaces_and_stops_cleanly(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={"PATH": os.environ["PATH"], "PROXY_ALLOW_OPEN": "true", "PROXY_LOG_LEVEL": "warning"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 503  # no OPENROUTER_API_KEY: readyz says so
        assert "OPENROUTER_API_KEY" in ready.json()["checks"]["upstream_key"]["detail"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_check_reaches_the_upstream_and_verifies_the_key(tmp_path, fake_server: LiveServer):
    base = f"{fake_server.url}/api/v1"
    good = run_cli("check", cwd=tmp_path, OPENROUTER_API_KEY=FAKE_KEY, OPENROUTER_BASE_URL=base)
    assert good.returncode == 0, good.stderr
    assert f"{len(CATALOGUE)} models" in good.stdout and "accepted" in good.stdout
    assert "free-model requests today" in good.stdout
    assert FAKE_KEY not in good.stdout + good.stderr

    bad = run_cli(
        "check", cwd=tmp_path, OPENROUTER_API_KEY="sk-or-v1-wrong", OPENROUTER_BASE_URL=base
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "openrouter-proxy: OpenRouter rejected OPENROUTER_API_KEY (401: User not found.)"
    ]


def test_check_without_key_or_upstream_fails_in_one_line(tmp_path):
    no_key = run_cli("check", cwd=tmp_path)
    assert no_key.returncode == 2 and "OPENROUTER_API_KEY is not set" in no_key.stderr
    unreachable = run_cli(
        "check",
        cwd=tmp_path,
        OPENROUTER_API_KEY="sk-or-v1-x",
        OPENROUTER_BASE_URL=f"http://127.0.0.1:{free_port()}/api/v1",
    )
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert "cannot reach OpenRouter" in unreachable.stderr
