"""Resource exhaustion (DESIGN §5, §6): the proxy's own limits are its own 503 and cool
nothing; request heads (finished or still arriving) and upstream answers are bounded;
1,000 streams fit under the common soft limit of 1,024 open files because `serve` raises
it; and out of open files, every client that connects still gets an answer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import app.server.http_limits
import app.upstream.reading
from app.descriptors import Descriptors
from app.main import create_app
from app.server.http_limits import BoundedHttpToolsProtocol
from tests.conftest import ProxyFactory, make_settings
from tests.fake_openrouter import QWEN, SCOUT, FakeOpenRouter, Raw, Reply
from tests.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "hi"}]


def chat(url: str, model: str, *, stream: bool = False, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "stream": stream, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.mark.anyio
@pytest.mark.parametrize("failure", [OSError(errno.EMFILE, "Too many open files"), MemoryError()])
async def test_local_exhaustion_is_a_503_that_cools_nothing(failure: BaseException) -> None:
    tried: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.path)
        if isinstance(failure, OSError):
            raise httpx.ConnectError("connect failed") from failure
        raise failure

    proxy = create_app(make_settings("http://fake"), transport=httpx.MockTransport(handler))
    services = proxy.state.services
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(proxy), base_url="http://localhost"
    ) as c:
        body = {"model": SCOUT, "models": [QWEN], "messages": HELLO}
        response = await c.post("/v1/chat/completions", json=body)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "proxy_out_of_resources"
    assert tried == ["/api/v1/chat/completions"]  # the walk stopped: every model is local
    assert (await services.cooldowns.snapshot([SCOUT, QWEN], services.clock())).cooling == {}


def test_an_answer_above_the_cap_is_a_broken_attempt(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.upstream.reading, "MAX_ANSWER_BYTES", 4096)
    # Each twice: a lone candidate that breaks is tried once more (DESIGN §6).
    fake.script(SCOUT, Reply(content="x" * 8192), Reply(content="x" * 8192))
    unfinished = Raw((b"data: " + b"y" * 8192,))  # one event, never finished
    fake.script(QWEN, unfinished, unfinished)
    with start_proxy() as proxy:
        whole = chat(proxy.url, SCOUT)
        event = chat(proxy.url, QWEN, stream=True)
        fine = chat(proxy.url, "deepseek/deepseek-r1:free")
    for response in (whole, event):
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_bad_response"
        assert "MiB" in response.json()["error"]["message"]
    assert fine.status_code == 200


@pytest.fixture
def bounded_proxy(fake_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The proxy served with the request-head protocol `serve` uses."""
    monkeypatch.setattr(app.server.http_limits, "HEAD_TIMEOUT", 0.5)
    server = LiveServer(create_app(make_settings(fake_server.url)))
    server.server.config.http = BoundedHttpToolsProtocol
    with server:
        yield server


@pytest.mark.parametrize("shape", ["one", "many"])
def test_request_heads_above_the_cap_get_431(
    bounded_proxy: LiveServer, fake: FakeOpenRouter, shape: str
) -> None:
    big = "a" * (app.server.http_limits.MAX_HEAD_BYTES + 1)
    headers = {"X-Title": big} if shape == "one" else {f"X-H{i}": "b" * 1000 for i in range(80)}
    response = httpx.post(
        f"{bounded_proxy.url}/v1/chat/completions",
        json={"model": SCOUT, "messages": HELLO},
        headers=headers,
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_headers_too_large"
    assert fake.served_requests() == []
    assert httpx.get(f"{bounded_proxy.url}/healthz").status_code == 200


def test_header_cap_holds_under_any_server(proxy: LiveServer, fake: FakeOpenRouter) -> None:
    headers = {f"X-H{i}": "b" * 1000 for i in range(70)}
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json={}, headers=headers)
    assert response.status_code == 431 and fake.served_requests() == []


def test_a_client_that_never_finishes_its_head_is_cut_off(bounded_proxy: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", bounded_proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        received = b""
        while chunk := sock.recv(4096):  # ends when the proxy closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 408")
    with socket.create_connection(("127.0.0.1", bounded_proxy.port), timeout=10) as idle:
        assert idle.recv(4096).startswith(b"HTTP/1.1 408")  # sent nothing at all


UNFINISHED_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "


def _send_unfinished_head(sock: socket.socket, size: int) -> None:
    """A header value of `size` bytes that never ends (no CRLF); the peer may hang up."""
    with contextlib.suppress(OSError):
        sock.sendall(UNFINISHED_HEAD + b"a" * size)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it ends the connection (or the socket timeout)."""
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_head_still_arriving_past_the_cap_gets_431_and_the_connection_ends(
    bounded_proxy: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", bounded_proxy.port), timeout=10) as sock:
        sender = threading.Thread(target=_send_unfinished_head, args=(sock, 1 << 20))
        sender.start()
        received = _answer(sock)  # ends with the server's FIN; a timeout leaves it short
        sender.join(10)
    assert received.startswith(b"HTTP/1.1 431"), received[:40]
    assert b'"code":"request_headers_too_large"' in received
    assert httpx.get(f"{bounded_proxy.url}/healthz").status_code == 200


def _memory_kib(pid: int, field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (the peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


CLIENTS, HEAD_MIB = 20, 4


def test_unfinished_heads_are_bounded_in_memory_while_the_server_answers(
    tmp_path: Path,
) -> None:
    with _served(tmp_path) as (url, proxy):
        port = int(url.rsplit(":", 1)[1])
        before = _memory_kib(proxy.pid, "VmRSS")
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CLIENTS)]
        try:
            senders = [
                threading.Thread(target=_send_unfinished_head, args=(sock, HEAD_MIB << 20))
                for sock in sockets
            ]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(30)
            health = httpx.get(f"{url}/healthz", timeout=5)  # while every head is unfinished
            grown_mib = (_memory_kib(proxy.pid, "VmHWM") - before) / 1024
            answers = [_answer(sock) for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()

    assert grown_mib < 16, f"{CLIENTS} unfinished {HEAD_MIB} MiB heads took {grown_mib:.0f} MiB"
    assert health.status_code == 200
    assert all(answer.startswith(b"HTTP/1.1 431") for answer in answers), answers[0][:40]


# ---------------------------------------------------------------------------------------------
# 1,000 streams under a soft limit of 1,024 open files
# ---------------------------------------------------------------------------------------------

STREAMS = 1000
SOFT_LIMIT = 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def _served(
    tmp_path: Path, *, chunk_delay: float = 0.0, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`openrouter-proxy serve` started with `preexec_fn` (its open-files limit) in front of
    the fake OpenRouter whose streams wait `chunk_delay` between chunks: its URL and process."""
    fake_port, proxy_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openrouter", "--port", str(fake_port)]
        + ["--chunk-delay", str(chunk_delay)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy_env = {
        **env,
        "OPENROUTER_API_KEY": "sk-or-v1-fake-upstream-key",
        "OPENROUTER_BASE_URL": f"http://127.0.0.1:{fake_port}/api/v1",
        "PROXY_LOG_LEVEL": "warning",
        # Hundreds of `:free` streams at once: far past the account's real 20 a minute.
        "PROXY_UPSTREAM_RPM": "100000",
        "PROXY_UPSTREAM_RPD": "100000",
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(proxy_port)],
        env=proxy_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec_fn,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{fake_port}/api/v1/models", fake)
        _wait_ready(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
        yield f"http://127.0.0.1:{proxy_port}", proxy
    finally:
        for process in (proxy, fake):
            process.terminate()
        for process in (proxy, fake):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def thousand_file_proxy(tmp_path: Path) -> Iterator[str]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # `serve` raises its soft limit to `hard`, and opens upstream connections up to a share
    # of it (app/descriptors.py).
    if hard != resource.RLIM_INFINITY and Descriptors(hard).upstream_cap < STREAMS:
        pytest.skip(f"the hard open-files limit ({hard}) is below what the test needs")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2 * STREAMS + 200), hard))
    try:
        with _served(tmp_path, chunk_delay=0.5, preexec_fn=_soft_limit) as (url, _):
            yield url
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _streams(url: str) -> list[tuple[int, bytes]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one() -> tuple[int, bytes]:
            body = {"model": SCOUT, "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                return response.status_code, await response.aread()

        return await asyncio.gather(*(one() for _ in range(STREAMS)))


def test_a_thousand_streams_fit_under_a_soft_limit_of_1024(thousand_file_proxy: str) -> None:
    url = thousand_file_proxy
    results = asyncio.run(asyncio.wait_for(_streams(url), timeout=240))
    statuses = [status for status, _ in results]
    assert statuses == [200] * STREAMS, {s: statuses.count(s) for s in set(statuses)}
    assert all(body.endswith(b"data: [DONE]\n\n") for _, body in results)
    cooling = httpx.get(f"{url}/v1/models").json()["data"]
    assert not [card["id"] for card in cooling if card.get("cooldown_until")]


# ---------------------------------------------------------------------------------------------
# Out of descriptors, every client is still answered
# ---------------------------------------------------------------------------------------------

HARD_LIMIT = 256  # open files, soft and hard: `serve` cannot raise it
FIRST_WAVE, SECOND_WAVE = 120, 60


def _hard_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD_LIMIT, HARD_LIMIT))


Result = tuple[int | str, bytes]  # status and body, or the transport error's name


async def _waves(url: str) -> tuple[list[Result], list[Result]]:
    """180 streams in two waves: the second connects while the first is still streaming,
    when a proxy that let its upstream side take every descriptor has none left to accept
    with."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        headed: asyncio.Queue[None] = asyncio.Queue()

        async def one() -> Result:
            body = {"model": SCOUT, "messages": HELLO, "stream": True}
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    headed.put_nowait(None)
                    return response.status_code, await response.aread()
            except httpx.TransportError as exc:  # reset, or closed with no answer
                headed.put_nowait(None)
                return type(exc).__name__, b""

        first = [asyncio.create_task(one()) for _ in range(FIRST_WAVE)]
        for _ in range(FIRST_WAVE):
            await headed.get()
        second = [asyncio.create_task(one()) for _ in range(SECOND_WAVE)]
        return await asyncio.gather(*first), await asyncio.gather(*second)


def test_out_of_descriptors_every_client_gets_an_answer(tmp_path: Path) -> None:
    with _served(tmp_path, chunk_delay=1.0, preexec_fn=_hard_limit) as (url, _):
        first, second = asyncio.run(asyncio.wait_for(_waves(url), timeout=120))
        cooling = httpx.get(f"{url}/v1/models").json()["data"]

    results = first + second
    unanswered = [status for status, _ in results if not isinstance(status, int)]
    assert unanswered == [], f"{len(unanswered)} of {len(results)} got no answer"
    for status, body in results:
        if status == 200:
            assert body.endswith(b"data: [DONE]\n\n")
        else:
            assert status == 503, body
            assert json.loads(body)["error"]["code"] == "proxy_out_of_resources"
    assert [status for status, _ in first].count(200) >= 20  # it still serves what fits
    assert not [card["id"] for card in cooling if card.get("cooldown_until")]
