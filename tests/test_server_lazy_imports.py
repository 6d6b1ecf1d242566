"""A serving process holds only what serving needs (issue 28, DESIGN §9: RSS ≤ 100 MiB
with 1,000 open streams). prometheus_client (until the first scrape), the TOML reader
(only `--config`) and a WebSocket library (no route takes one; an upgrade is refused with
403 all the same) cost a process ~2 MiB together; each is loaded where it is first used.
This test fails when an import at start-up brings one back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fake_openrouter import FAKE_KEY, SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer
from tests.test_e2e_shutdown import ROOT, free_port, wait_until_up

# `serve` as the command runs it; the modules loaded are written out when it exits.
SERVE = """
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").write("\\n".join(sorted(sys.modules))))
from app.cli import main
sys.exit(main(["serve", "--port", sys.argv[2]]))
"""

# Module prefixes an open-mode process serving chat never needs.
NOT_LOADED = ("prometheus_client", "tomllib", "uvicorn.protocols.websockets", "wsproto")
UPGRADE = (
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def websocket_upgrade(port: int) -> bytes:
    """What the server answers a WebSocket handshake, up to its close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(UPGRADE)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received


def serve_and_list_modules(tmp_path: Path, fake_url: str, *paths: str) -> list[str]:
    """Start `serve`, send a streamed and a plain chat request, GET each of `paths` and
    try a WebSocket; stop it with SIGTERM and return the modules it had loaded."""
    port, listing = free_port(), tmp_path / "modules.txt"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{fake_url}/api/v1",
        "PROXY_DB_PATH": str(tmp_path / "proxy.db"),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(listing), str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        for stream in (True, False):
            body = {"model": SCOUT, "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": stream})
            assert answer.status_code == 200, answer.text
        for path in paths:
            assert httpx.get(f"{url}{path}").status_code == 200
        assert websocket_upgrade(port).startswith(b"HTTP/1.1 403 ")  # as Starlette refuses it
        assert httpx.get(f"{url}/healthz").status_code == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    return listing.read_text().split("\n")


def test_a_serving_process_never_loads_what_only_a_scrape_or_a_config_file_needs(
    tmp_path: Path, fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Reply(content="hello"), Reply(content="hello"))
    loaded = serve_and_list_modules(tmp_path, fake_server.url)
    assert [name for name in loaded if name.startswith(NOT_LOADED)] == []


def test_the_first_scrape_loads_prometheus_client_and_answers(
    tmp_path: Path, fake: FakeOpenRouter, fake_server: LiveServer
):
    fake.script(SCOUT, Reply(content="hello"), Reply(content="hello"))
    loaded = serve_and_list_modules(tmp_path, fake_server.url, "/metrics")
    assert "prometheus_client" in loaded
