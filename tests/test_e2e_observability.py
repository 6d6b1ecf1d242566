"""Logs, redaction and readiness as an operator meets them (DESIGN §11): `python -m app
serve` runs as a subprocess in key mode with JSON logs; its stderr, every response and
the /metrics text are read back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_openrouter import FAKE_KEY, QWEN, SCOUT, FakeOpenRouter, HttpError, Reply
from tests.live_server import LiveServer
from tests.polling import wait_until
from tests.read_only import needs_mount

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "sk-admin-observability-0123456789"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(db: Path, upstream: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),  # this checkout, not an installed copy
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{upstream}/api/v1",
        "PROXY_DB_PATH": str(db),
        "PROXY_ADMIN_KEY": ADMIN,
        "PROXY_LOG_FORMAT": "json",
        "PROXY_UPSTREAM_RPM": "1000",
    }


def create_key(env: dict[str, str], name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "app", "keys", "create", name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@dataclass
class Served:
    """A `serve` subprocess; `seen` collects every response's status line, headers and body."""

    process: subprocess.Popen[str]
    url: str
    seen: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 20)
        response = httpx.request(method, f"{self.url}{path}", **kwargs)
        self.seen.append(f"{response.status_code} {dict(response.headers)!r} {response.text}")
        return response

    def stop(self) -> list[str]:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        return err.splitlines()


def serve(env: dict[str, str], cwd: Path, prefix: tuple[str, ...] = ()) -> Served:
    port = free_port()
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return Served(process, url)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"serve did not start: {process.communicate()[1]}") from None
            time.sleep(0.1)


@pytest.fixture
def upstream(fake: FakeOpenRouter) -> Iterator[str]:
    with LiveServer(fake.app) as server:
        yield server.url


def chat(
    served: Served, request_id: str, key: str | None, timeout: float = 20, **body: Any
) -> httpx.Response:
    headers = {"X-Request-Id": request_id}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return served.request(
        "POST", CHAT, json={"messages": HELLO, **body}, headers=headers, timeout=timeout
    )


def test_json_lines_carry_the_fields_and_no_secret_leaves_anywhere(
    tmp_path: Path, fake: FakeOpenRouter, upstream: str
) -> None:
    env = base_env(tmp_path / "proxy.db", upstream)
    secret = create_key(env, "alice")
    secrets = (FAKE_KEY, secret, ADMIN)
    # Upstream text that echoes every secret, as some providers echo the request.
    echo = f"upstream saw Bearer {FAKE_KEY}, client {secret}, admin {ADMIN}"
    failing = HttpError(
        502,
        {"error": {"code": 502, "message": f"failed: {echo}", "metadata": {"raw": echo}}},
    )
    fake.set_default(QWEN, failing)
    fake.script(SCOUT, Reply(), Reply(), Reply(), Reply(first_byte_delay=3), Reply())

    served = serve(env, tmp_path)
    try:
        assert chat(served, "obs-ok", secret, model=SCOUT).status_code == 200
        streamed = chat(served, "obs-stream", secret, model=SCOUT, stream=True)
        assert streamed.status_code == 200 and "server-timing" in streamed.headers
        fallback = chat(served, "obs-fallback", secret, model=QWEN, models=[QWEN, SCOUT])
        assert fallback.status_code == 200 and fallback.headers["x-proxy-attempts"] == "2"
        relayed = chat(served, "obs-502", secret, model=QWEN)
        assert relayed.status_code == 502 and "[redacted]" in relayed.text
        assert chat(served, "obs-401", None, model=SCOUT).status_code == 401
        assert chat(served, "obs-401-wrong", "sk-proxy-wrong", model=SCOUT).status_code == 401
        with pytest.raises(httpx.ReadTimeout):  # the client leaves mid-request
            chat(served, "obs-499", secret, timeout=0.5, model=SCOUT)
        first = chat(served, "obs-miss", secret, model=SCOUT, temperature=0)
        hit = chat(served, "obs-hit", secret, model=SCOUT, temperature=0)
        assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert served.request("GET", "/metrics").status_code == 401
        metrics = served.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        assert metrics.status_code == 200 and "openrouter_proxy_requests_total" in metrics.text
        ready = served.request("GET", "/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert set(checks) == {"upstream_key", "catalogue", "database"}
        assert checks["catalogue"]["age_seconds"] >= 0
        # The 499 is counted, then logged in the same step, once the proxy notices the
        # client left.
        admin = {"Authorization": f"Bearer {ADMIN}"}
        wait_until(
            lambda: 'status="499"' in served.request("GET", "/metrics", headers=admin).text,
            message="the 499 in /metrics",
        )
    finally:
        lines = served.stop()
    check = subprocess.run(
        [sys.executable, "-m", "app", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr

    records = [json.loads(line) for line in lines]  # every line is JSON
    by_id = {r["id"]: r for r in records if r["logger"] == "openrouter_proxy.request"}
    ok = by_id["obs-ok"]
    assert ok["key"] == "alice" and ok["route"] == CHAT and ok["status"] == 200
    assert ok["model"] == ok["served"] == SCOUT and ok["attempts"] == 1
    assert ok["cache"] == "BYPASS" and ok["prompt_tokens"] > 0 and ok["completion_tokens"] > 0
    assert isinstance(ok["ms"], int)
    stream = by_id["obs-stream"]
    assert stream["stream"] is True and stream["status"] == 200 and stream["completion_tokens"]
    assert by_id["obs-fallback"]["served"] == SCOUT and by_id["obs-fallback"]["attempts"] == 2
    assert by_id["obs-502"]["status"] == 502 and by_id["obs-502"]["model"] == QWEN
    for refused in ("obs-401", "obs-401-wrong"):
        assert by_id[refused]["status"] == 401 and by_id[refused]["key"] is None
        assert by_id[refused]["route"] == CHAT and "ms" in by_id[refused]
    gone = by_id["obs-499"]
    assert gone["status"] == 499 and gone["key"] == "alice" and gone["model"] == SCOUT
    assert by_id["obs-hit"]["cache"] == "HIT" and by_id["obs-hit"]["served"] == SCOUT
    # Each failed attempt: one line with OpenRouter's message and raw, tied to its request.
    failures = [r for r in records if r["logger"] == "openrouter_proxy.fallback"]
    fallback_failure = next(r for r in failures if r["id"] == "obs-fallback")
    assert fallback_failure["model"] == QWEN and fallback_failure["outcome"] == "error"
    assert fallback_failure["status"] == 502
    assert fallback_failure["raw"].startswith("upstream saw Bearer [redacted]")
    # uvicorn's access log is replaced by the request line.
    assert not any(r["logger"] == "uvicorn.access" for r in records)

    everything = [*lines, *served.seen, metrics.text, check.stdout, check.stderr]
    for text in everything:
        for leaked in secrets:
            assert leaked not in text, (leaked, text)


@needs_mount
def test_readyz_turns_503_naming_the_database_when_its_folder_turns_read_only(
    tmp_path: Path, upstream: str
) -> None:
    """The server runs in a private mount namespace; a helper in that namespace remounts the
    database's folder read-only on a signal file, so nothing outside the test sees it."""
    folder, control = tmp_path / "data", tmp_path / "control"
    folder.mkdir()
    control.mkdir()
    env = base_env(folder / "proxy.db", upstream)
    create_key(env, "alice")  # the database exists and is writable at start
    trigger, done = control / "go", control / "mounted"
    script = (
        f"(while [ ! -e {trigger} ]; do sleep 0.05; done; "
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
        f'touch {done}) & exec "$@"'
    )
    served = serve(env, tmp_path, prefix=("unshare", "-m", "sh", "-c", script, "sh"))
    try:
        before = served.request("GET", "/readyz")
        assert before.status_code == 200, before.text
        trigger.touch()
        wait_until(done.exists, message="the read-only remount")
        after = served.request("GET", "/readyz")
    finally:
        served.stop()
    assert after.status_code == 503
    body = after.json()
    assert body["failing"] == ["database"]
    detail = body["checks"]["database"]["detail"]
    assert str(folder / "proxy.db") in detail and "read-only" in detail


def test_readyz_names_redis_when_configured_and_unreachable(tmp_path: Path, upstream: str) -> None:
    env = {**base_env(tmp_path / "proxy.db", upstream), "PROXY_REDIS_URL": "redis://127.0.0.1:9"}
    served = serve(env, tmp_path)
    try:
        ready = served.request("GET", "/readyz")
    finally:
        served.stop()
    # DESIGN §12: the default PROXY_REDIS_FAIL=degraded still serves, and says Redis is away.
    assert ready.status_code == 200
    assert ready.json()["failing"] == ["redis"]
    assert ready.json()["checks"]["redis"]["ok"] is False
