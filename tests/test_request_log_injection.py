"""Logs nobody can forge (DESIGN §11): a model id or upstream text with line breaks stays
inside its own line, in both formats; with `json` every line the process writes is JSON,
uvicorn's included. The server runs as `python -m app serve` and its stderr is read."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_openrouter import FAKE_KEY, FakeOpenRouter, Reply
from tests.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
FORGED = "2030-01-01 00:00:00,000 INFO openrouter_proxy.request: id=forged status=200"
EVIL_MODELS = [f"acme/x\n{FORGED}", f"acme/y\r{FORGED}", f"acme/z\u2028{FORGED}"]
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
REQUEST_LINE = re.compile(r"^\S+ \S+ INFO openrouter_proxy\.request: id=")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_proxy(tmp_path: Path, upstream: str, fmt: str) -> list[str]:
    """Serve, send the hostile requests, stop; return every stderr line."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "OPENROUTER_"))}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{upstream}/api/v1",
        "PROXY_LOG_FORMAT": fmt,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        for model in EVIL_MODELS:
            for stream in (False, True):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": stream})
        # uvicorn's own warning line: an invalid request.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            sock.recv(1024)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    return err.splitlines()


@pytest.fixture
def upstream() -> Iterator[str]:
    fake = FakeOpenRouter()
    fake.set_default(EVIL_MODELS[0], Reply())  # one answers, the others are invalid ids
    with LiveServer(fake.app) as server:
        yield server.url


REQUESTS = len(EVIL_MODELS) * 2


def test_text_lines_cannot_be_forged(tmp_path: Path, upstream: str) -> None:
    lines = run_proxy(tmp_path, upstream, "text")
    assert all(TEXT_LINE.match(line) for line in lines), lines
    requests = [line for line in lines if REQUEST_LINE.match(line)]
    assert len(requests) == REQUESTS, requests
    assert not any(line.startswith("2030-") for line in lines)
    assert any("uvicorn" in line for line in lines)


def test_json_lines_are_all_json(tmp_path: Path, upstream: str) -> None:
    lines = run_proxy(tmp_path, upstream, "json")
    records = [json.loads(line) for line in lines]  # every line, uvicorn's included
    assert any(r["logger"].startswith("uvicorn") for r in records)
    requests = [r for r in records if r["logger"] == "openrouter_proxy.request"]
    assert len(requests) == REQUESTS
    # Every requested model is logged exactly as the client sent it, line breaks and all,
    # on the answered requests and the refused ones alike.
    assert {r.get("model") for r in requests} == set(EVIL_MODELS)
