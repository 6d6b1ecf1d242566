"""SIGTERM (DESIGN §5): `serve` lets open requests run for its grace period, then ends each
stream still open with one error event and `[DONE]`: never a cut body, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.cli import GRACE_SECONDS
from tests.fake_openrouter import FAKE_KEY, SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


def test_sigterm_ends_an_open_stream_with_one_error_event_and_done(
    tmp_path: Path, fake: FakeOpenRouter, fake_server: LiveServer
):
    # A stream that would run for 40 s: longer than the grace period.
    fake.script(SCOUT, Reply(content="x" * 200, chunks=200, chunk_delay=0.2))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),  # this checkout, not an installed copy
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{fake_server.url}/api/v1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={"model": SCOUT, "messages": [{"role": "user", "content": "hi"}], "stream": True},
            timeout=GRACE_SECONDS + 10,
        ) as response:
            parts = response.iter_raw()
            received = [next(parts)]  # the first content: the stream is open
            signalled_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            received.extend(parts)  # raises if the chunked body is cut
        ended_after = time.monotonic() - signalled_at
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    body = b"".join(received)
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    errors = [e for e in events if b'"error"' in e]
    assert errors == [events[-2]]
    assert b"shutting down" in errors[0]
    assert GRACE_SECONDS - 3 < ended_after < GRACE_SECONDS + 1  # the grace period was given
    assert process.returncode == 0
    assert "Traceback" not in stderr, stderr
