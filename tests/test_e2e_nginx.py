"""The committed nginx configuration (deploy/nginx.conf), run for real (DESIGN §10, §12).

Debian's `nginx` runs the committed file, with only its upstream `server` lines and its
`listen` line replaced, in front of two `serve` processes (tests/replicas.py) that share one
SQLite file and the fake OpenRouter. Through it: a stream arrives event by event, a 15 MiB
body reaches the proxy, a body above PROXY_MAX_BODY_MB gets the proxy's own 413, requests are
spread over both replicas, and the client's Host still reaches the proxy's host check. The
timeouts, which a test cannot wait out, are read from the file and compared with the
settings' defaults.

Without nginx the tests skip naming the apt package (CI installs it: `.ci/run`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from openai import OpenAI

from app.config import MIB, Settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer
from tests.replicas import Replicas, free_port, replica_env

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NEEDS = "needs nginx: apt-get install nginx"
START_TIMEOUT = 10.0

UPSTREAM_BLOCK = re.compile(r"(?ms)^(\s*upstream\s+openrouter_proxy\s*\{)(.*?)(^\s*\})")
SERVER_LINE = re.compile(r"(?m)^\s*server\s+[^;]+;\s*$\n?")
LISTEN_LINE = re.compile(r"(?m)^(\s*)listen\s+[^;]+;")


# --- reading the committed file ----------------------------------------------------------


def committed_config() -> str:
    return NGINX_CONF.read_text(encoding="utf-8")


def without_comments(text: str) -> str:
    return re.sub(r"(?m)#.*$", "", text)


def directive(text: str, name: str) -> list[str]:
    """The arguments of every `name ...;` in the file (comments ignored)."""
    return [
        m.group(1).strip()
        for m in re.finditer(rf"(?m)^\s*{name}\s+([^;]*);", without_comments(text))
    ]


def only(text: str, name: str) -> str:
    found = directive(text, name)
    assert len(found) == 1, f"expected one `{name}` in {NGINX_CONF.name}, found {found}"
    return found[0]


def nginx_seconds(value: str) -> float:
    """nginx time syntax: `600`, `600s`, `10m`, `1h`, `500ms`, or combined like `1m30s`."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)?", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsed time {value!r}"
    return sum(int(n) * units[u or "s"] for n, u in parts)


def nginx_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, f"unparsed size {value!r}"
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def upstream_servers(text: str) -> list[str]:
    match = UPSTREAM_BLOCK.search(text)
    assert match, "no `upstream openrouter_proxy { ... }` block"
    return [line.split()[1].rstrip(";") for line in SERVER_LINE.findall(match.group(2))]


def render(text: str, upstreams: list[str], port: int) -> str:
    """The committed file with its replicas and listen address replaced, nothing else."""
    match = UPSTREAM_BLOCK.search(text)
    assert match, "no `upstream openrouter_proxy { ... }` block"
    body = match.group(2)
    first = SERVER_LINE.search(body)
    assert first, "the upstream block lists no server"
    servers = "".join(f"    server {address};\n" for address in upstreams)
    body = body[: first.start()] + servers + SERVER_LINE.sub("", body[first.start() :])
    text = text[: match.start(2)] + body + text[match.end(2) :]
    text, listens = LISTEN_LINE.subn(rf"\1listen 127.0.0.1:{port};", text)
    assert listens == 1, f"expected one listen line, found {listens}"
    return text


DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]


def test_committed_config_passes_streams_waits_long_enough_and_takes_large_bodies() -> None:
    text = committed_config()
    assert only(text, "proxy_buffering") == "off"
    assert only(text, "proxy_cache") == "off"
    assert only(text, "proxy_http_version") == "1.1"
    headers = {
        h.split(None, 1)[0].lower(): h.split(None, 1)[1]
        for h in directive(text, "proxy_set_header")
    }
    assert headers["connection"] == '""', "keep-alive to the replicas needs an empty Connection"
    assert headers["host"] == "$http_host"
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert headers["x-forwarded-proto"] == "$scheme"
    # Each bounds the wait between two reads or writes: at least one whole attempt.
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert nginx_seconds(only(text, name)) >= DEFAULTS.total_timeout, name
    body_limit = nginx_bytes(only(text, "client_max_body_size"))
    assert body_limit > DEFAULTS.max_body_mb * MIB, "the proxy's own 413 must answer first"
    assert upstream_servers(text) == ["proxy-a:8080", "proxy-b:8080"]


def test_render_replaces_only_the_replicas_and_the_listen_address() -> None:
    text = committed_config()
    rendered = render(text, ["127.0.0.1:1", "127.0.0.1:2"], 3)
    assert upstream_servers(rendered) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert directive(rendered, "listen") == ["127.0.0.1:3"]
    changed = set(rendered.splitlines()) ^ set(text.splitlines())
    assert all(re.match(r"\s*(server|listen)\s", line) for line in changed), changed


# --- running it ---------------------------------------------------------------------------


def nginx_binary() -> str:
    """Debian installs it in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip(NEEDS)
    return found


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Nginx:
    """Debian's nginx in the foreground, everything it writes under `prefix`."""

    binary: str
    prefix: Path
    site: str  # the rendered committed file
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_config(self) -> str:
        """What the official image's nginx.conf does around conf.d/*.conf, with every path
        under the prefix and gzip on; as root the workers stay root so they can read it."""
        p = self.prefix
        user = "user root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes 1;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            # An http{} that compresses text, as many do: the committed file must still
            # pass streams through uncompressed (gzip holds output back until it has more).
            "    gzip on;\n"
            "    gzip_min_length 1;\n"
            "    gzip_types text/event-stream application/json;\n"
            f"    access_log {p}/access.log;\n"
            f"    client_body_temp_path {p}/client_body;\n"
            f"    proxy_temp_path {p}/proxy;\n"
            f"    fastcgi_temp_path {p}/fastcgi;\n"
            f"    uwsgi_temp_path {p}/uwsgi;\n"
            f"    scgi_temp_path {p}/scgi;\n"
            f"    include {p}/openrouter-proxy.conf;\n"
            "}\n"
        )

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        (self.prefix / "openrouter-proxy.conf").write_text(self.site)
        main = self.prefix / "nginx.conf"
        main.write_text(self.main_config())
        error_log = self.prefix / "error.log"
        self.process = subprocess.Popen(
            [self.binary, "-p", f"{self.prefix}/", "-c", str(main), "-e", str(error_log)]
            + ["-g", f"daemon off; pid {self.prefix}/nginx.pid; error_log {error_log};"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"nginx did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown of master and workers
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Stack:
    fake: FakeOpenRouter
    replicas: Replicas
    nginx: Nginx

    def sdk(self) -> OpenAI:
        return OpenAI(base_url=f"{self.nginx.url}/v1", api_key="unused-open-mode", max_retries=0)

    def received(self, request_id: str) -> list[bytes]:
        return [r.body for r in self.fake.requests if r.request_id == request_id]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = nginx_binary()
    base = tmp_path_factory.mktemp("nginx-stack")
    fake = FakeOpenRouter()
    with LiveServer(fake.app) as upstream:
        env = replica_env(upstream.url, PROXY_DB_PATH=str(base / "shared.db"))
        with Replicas(2, env, base / "replicas") as replicas:
            site = render(committed_config(), [r.address for r in replicas], free_port())
            port = int(directive(site, "listen")[0].rsplit(":", 1)[1])
            with Nginx(binary, base / "nginx", site, port) as nginx:
                yield Stack(fake, replicas, nginx)


def test_a_stream_arrives_event_by_event_through_nginx(stack: Stack) -> None:
    # Eight content events 0.25 s apart: about two seconds from the first to the last.
    stack.fake.script(SCOUT, Reply(content="abcdefgh", chunks=8, chunk_delay=0.25))
    rid = "nginx-stream-1"
    first_content_at = None
    parts: list[str] = []
    with stack.sdk() as sdk:
        stream = sdk.chat.completions.create(
            model=SCOUT,
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            extra_headers={"X-Request-Id": rid},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first_content_at = first_content_at or time.monotonic()
                parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == "abcdefgh"
    (sent,) = [times for key, times in stack.fake.sent_at.items() if key.startswith(rid)]
    # The client had the first content before the fake had even written its last event:
    # nothing between them (nginx included) held the stream back.
    assert first_content_at is not None and first_content_at < sent[-1], (
        f"first content {first_content_at}, the fake's events {sent}\n{stack.nginx.log()}"
    )


def test_a_15_mib_body_goes_through_nginx_to_the_proxy_and_upstream(stack: Stack) -> None:
    rid = "nginx-body-15"
    content = "x" * (15 * MIB)
    with stack.sdk() as sdk:
        answer = sdk.chat.completions.with_raw_response.create(
            model=SCOUT,
            messages=[{"role": "user", "content": content}],
            extra_headers={"X-Request-Id": rid},
            timeout=60,
        )
    assert answer.status_code == 200
    assert answer.parse().choices[0].message.content
    (body,) = stack.received(rid)
    assert len(body) > 15 * MIB


def test_a_body_above_the_proxy_limit_gets_the_proxys_413_not_nginxs(stack: Stack) -> None:
    # Just above PROXY_MAX_BODY_MB but within nginx's margin: the client gets the proxy's
    # OpenAI-shaped error, not nginx's HTML page.
    content = "x" * int((DEFAULTS.max_body_mb + 1) * MIB)
    body = {"model": SCOUT, "messages": [{"role": "user", "content": content}]}
    response = httpx.post(
        f"{stack.nginx.url}/v1/chat/completions",
        json=body,
        headers={"X-Request-Id": "nginx-body-too-large"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:500]
    assert response.json()["error"]["type"], response.text[:500]
    assert not stack.received("nginx-body-too-large")


def test_requests_are_spread_over_both_replicas(stack: Stack) -> None:
    ids = [f"nginx-spread-{n}" for n in range(6)]
    with stack.sdk() as sdk:
        for rid in ids:
            sdk.chat.completions.create(
                model=SCOUT,
                messages=[{"role": "user", "content": rid}],
                extra_headers={"X-Request-Id": rid},
            )
    # Each replica logs one line per request with its id: which one answered each.
    deadline = time.monotonic() + 5
    while True:
        served = {rid: [r.index for r in stack.replicas if rid in r.log()] for rid in ids}
        if all(len(where) == 1 for where in served.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert all(len(where) == 1 for where in served.values()), served
    assert {where[0] for where in served.values()} == {0, 1}, served


def test_the_clients_host_reaches_the_proxys_host_check(stack: Stack) -> None:
    # nginx passes Host on, so DNS rebinding (a page on attacker.example resolving to this
    # machine) still meets the proxy's 403; a loopback name still gets through.
    refused = httpx.get(f"{stack.nginx.url}/v1/models", headers={"Host": "attacker.example"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["message"]
    allowed = httpx.get(f"{stack.nginx.url}/v1/models", headers={"Host": "localhost"})
    assert allowed.status_code == 200, allowed.text
