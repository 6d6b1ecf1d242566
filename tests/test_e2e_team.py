"""Issue 18's "Done when", end to end: one OpenRouter key shared by a team through the real
proxy (uvicorn on 127.0.0.1) in front of the fake OpenRouter. Keys are made with the real
CLI (`python -m app keys …`) on the proxy's own database while it runs; clients are the
openai and anthropic SDKs where what a client sees matters, httpx elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai import OpenAI

from app.main import create_app
from tests.conftest import ProxyFactory, make_settings
from tests.fake_openrouter import (
    DEEPSEEK,
    DEFAULT_CONTENT,
    FAKE_KEY,
    MESSAGES_PATH,
    MISTRAL,
    QWEN,
    SCOUT,
    SCOUT_PAID,
    FakeOpenRouter,
    Reply,
    provider_502,
)
from tests.live_server import LiveServer
from tests.polling import wait_until
from tests.read_only import needs_mount, run_with_read_only
from tests.test_e2e_shutdown import free_port, wait_until_up
from tests.test_team_cli import ROOT, one_error_line, run_cli

CHAT = "/v1/chat/completions"
UPSTREAM_CHAT = "/api/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
GPT = "openai/gpt-4o-mini"
# DESIGN §2: a running server sees a new or revoked key within one second.
SEEN_WITHIN = 1.0


def create_key(db: Path, name: str, *flags: str) -> str:
    """`openrouter-proxy keys create NAME FLAGS…` in its own process; the secret it prints."""
    result = run_cli("keys", "create", name, *flags, db=db)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def chat(url: str, secret: str | None = None, **body: Any) -> httpx.Response:
    payload = {"model": SCOUT, "messages": HI, **body}
    return httpx.post(f"{url}{CHAT}", json=payload, headers=bearer(secret) if secret else {})


def refused(url: str, secret: str | None = None) -> bool:
    """GET /v1/usage answers 401: the server has seen a first key, or `secret` revoked.
    It counts toward no quota and reaches no upstream."""
    headers = bearer(secret) if secret else {}
    return httpx.get(f"{url}/v1/usage", headers=headers).status_code == 401


def upstream_posts(fake: FakeOpenRouter) -> list[str]:
    return [r.path for r in fake.served_requests() if r.method == "POST"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "proxy.db"


# --- 1. open mode, then keys ---------------------------------------------------------------


def test_open_mode_until_the_cli_creates_a_key_then_chat_and_messages_need_it(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    with start_proxy(db_path=db) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key="anything", max_retries=0) as sdk:
            answer = sdk.chat.completions.create(model=SCOUT, messages=HI)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == DEFAULT_CONTENT
        assert chat(proxy.url).status_code == 200  # no key at all

        secret = create_key(db, "alice")
        wait_until(lambda: refused(proxy.url), message="the server to see the new key")

        missing = chat(proxy.url)
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        with OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-proxy-wrong", max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError):
                sdk.chat.completions.create(model=SCOUT, messages=HI)  # type: ignore[arg-type]
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=secret, max_retries=0) as sdk:
            answer = sdk.chat.completions.create(model=SCOUT, messages=HI)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == DEFAULT_CONTENT

        message = {"model": SCOUT, "max_tokens": 64, "messages": HI}
        bare = httpx.post(f"{proxy.url}/v1/messages", json=message)
        assert bare.status_code == 401
        assert bare.json()["type"] == "error"
        assert bare.json()["error"]["type"] == "authentication_error"
        assert "API key" in bare.json()["error"]["message"]
        with anthropic.Anthropic(base_url=proxy.url, api_key="sk-proxy-wrong", max_retries=0) as a:
            with pytest.raises(anthropic.AuthenticationError):
                a.messages.create(**message)  # type: ignore[arg-type]
        # The anthropic SDK sends its key as `x-api-key`.
        with anthropic.Anthropic(base_url=proxy.url, api_key=secret, max_retries=0) as a:
            reply = a.messages.create(**message)  # type: ignore[arg-type]
        assert reply.content[0].text == DEFAULT_CONTENT  # type: ignore[union-attr]

    # Three answered requests went up (two in open mode, one with the key on each route);
    # the refused ones never did, and the client's key was never forwarded.
    assert upstream_posts(fake) == [UPSTREAM_CHAT] * 3 + [MESSAGES_PATH]
    assert all(secret not in json.dumps(r.headers) for r in fake.requests)
    posts = [r for r in fake.served_requests() if r.method == "POST"]
    assert all(r.headers["authorization"] == f"Bearer {FAKE_KEY}" for r in posts)


# --- 2, 3. rpm -------------------------------------------------------------------------------


def test_rpm_2_lets_two_of_three_quick_requests_through(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice", "--rpm", "2")
    with start_proxy(db_path=db) as proxy:
        answers = [chat(proxy.url, secret) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    message = refused.json()["error"]["message"]
    assert "rpm limit of 2 requests per minute reached for key 'alice'" in message
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert len(fake.chat_requests()) == 2


def test_fifty_concurrent_requests_against_rpm_10_admit_exactly_10(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    """Fired through a barrier: each of the 50 sends all of its request but the body's last
    byte; once the proxy holds all 50 waiting for their bodies, one callback on its own loop
    sends the 50 last bytes, so it takes them in together. A check and count that are not
    one step then admit far more than 10, not one too many."""
    secret = create_key(db, "alice", "--rpm", "10")
    body = json.dumps({"model": SCOUT, "messages": HI}).encode()
    with start_proxy(db_path=db) as proxy:
        # The catalogue is loaded first, as it is once a proxy runs: its first load lets the
        # waiting requests on one at a time, which would hide a quota's race.
        assert httpx.get(f"{proxy.url}/v1/models", headers=bearer(secret)).status_code == 200
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
            f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        clients = [socket.create_connection(("127.0.0.1", proxy.port), 30) for _ in range(50)]
        for client in clients:
            client.sendall(head + body[:-1])
        deadline = time.monotonic() + 10
        while len(proxy.server.server_state.tasks) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(proxy.server.server_state.tasks) == 50
        assert proxy.loop is not None
        proxy.loop.call_soon_threadsafe(lambda: [c.sendall(body[-1:]) for c in clients])
        statuses = [int(read_to_end(client).split(b" ", 2)[1]) for client in clients]
    assert (statuses.count(200), statuses.count(429)) == (10, 40)
    assert len(fake.chat_requests()) == 10


def read_to_end(client: socket.socket) -> bytes:
    """What the server sent until it closed the connection."""
    with client:
        parts = []
        while part := client.recv(65536):
            parts.append(part)
    return b"".join(parts)


# --- 4. concurrency --------------------------------------------------------------------------


def test_concurrency_2_holds_a_third_stream_at_429(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice", "--concurrency", "2")
    slow = Reply(content="one two three four", chunks=4, chunk_delay=0.3)
    fake.script(SCOUT, slow, slow, Reply())
    body = {"model": SCOUT, "messages": HI, "stream": True}
    with start_proxy(db_path=db) as proxy, httpx.Client(base_url=proxy.url) as client:
        with (
            client.stream("POST", CHAT, json=body, headers=bearer(secret)) as first,
            client.stream("POST", CHAT, json=body, headers=bearer(secret)) as second,
        ):
            # Both streams are open and have sent their first content. (An abandoned
            # iter_lines() would close its connection: each is kept and read to the end.)
            assert first.status_code == second.status_code == 200
            lines = [first.iter_lines(), second.iter_lines()]
            assert all(next(stream).startswith("data:") for stream in lines)
            third = client.post(CHAT, json=body, headers=bearer(secret))
            assert third.status_code == 429
            assert "concurrency limit of 2" in third.json()["error"]["message"]
            assert "Retry-After" in third.headers
            assert all("data: [DONE]" in list(stream) for stream in lines)
        # A stream's slot is free again once it has ended.
        after = client.post(CHAT, json=body, headers=bearer(secret))
        assert after.status_code == 200 and "data: [DONE]" in after.text
    assert len(fake.chat_requests()) == 3


# --- 5. revoke -------------------------------------------------------------------------------


def test_revoke_takes_effect_within_a_second_on_a_running_server(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice")
    create_key(db, "bob")  # so revoking alice does not leave the proxy without keys
    with start_proxy(db_path=db) as proxy:
        assert chat(proxy.url, secret).status_code == 200  # the ring has just looked
        assert run_cli("keys", "revoke", "alice", db=db).returncode == 0
        # Refused within the second: the last look starts once it has passed.
        wait_until(lambda: refused(proxy.url, secret), timeout=SEEN_WITHIN, message="revoked")
        answer = chat(proxy.url, secret)
    assert answer.status_code == 401
    assert "'alice' was revoked" in answer.json()["error"]["message"]
    assert len(fake.chat_requests()) == 1


# --- 6. tpd ----------------------------------------------------------------------------------


def test_tpd_counts_the_tokens_the_upstream_reports_streams_included(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    with start_proxy(db_path=db) as proxy:
        # What the fake reports for this request, learnt in open mode (nothing counted).
        tokens = chat(proxy.url).json()["usage"]["total_tokens"]
        assert tokens > 0
        limit = 2 * tokens - 1  # the first answer leaves room, the second spends it
        secret = create_key(db, "alice", "--tpd", str(limit))
        wait_until(lambda: refused(proxy.url), message="the server to see the new key")

        first = chat(proxy.url, secret)
        assert first.status_code == 200
        streamed = chat(proxy.url, secret, stream=True)
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
        # The stream was admitted with the first answer's tokens counted.
        assert streamed.headers["x-ratelimit-remaining-tokens"] == str(limit - tokens)
        third = chat(proxy.url, secret)
        usage = httpx.get(f"{proxy.url}/v1/usage", headers=bearer(secret)).json()
    assert third.status_code == 429
    message = third.json()["error"]["message"]
    assert f"tpd limit of {limit} tokens per day reached for key 'alice'" in message
    assert usage["used"]["tpd"] == 2 * tokens and usage["remaining"]["tpd"] == 0
    assert len(fake.chat_requests()) == 3  # open-mode probe, answer, stream


# --- 7. free-only ----------------------------------------------------------------------------

COSTLY: list[tuple[dict[str, Any], str]] = [
    ({"model": GPT}, "is priced"),
    ({"model": "openrouter/auto"}, "router"),
    ({"model": "@preset/x"}, "preset"),
    ({"model": f"{SCOUT}:online"}, ":online"),
    ({"model": SCOUT, "plugins": [{"id": "web"}]}, "plugins"),
    ({"model": SCOUT, "tools": [{"type": "openrouter:web_search"}]}, "openrouter:web_search"),
    ({"model": GPT, "models": ["anthropic/claude-3.5-haiku"]}, "is priced"),
]


def test_a_free_only_key_gets_403_for_what_would_cost_and_the_upstream_sees_nothing(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice")
    with (
        start_proxy(db_path=db, allow_paid=True) as proxy,
        OpenAI(base_url=f"{proxy.url}/v1", api_key=secret, max_retries=0) as sdk,
    ):
        for body, words in COSTLY:
            model, extra = body["model"], {k: v for k, v in body.items() if k != "model"}
            with pytest.raises(openai.PermissionDeniedError) as refused:
                sdk.chat.completions.create(model=model, messages=HI, extra_body=extra)  # type: ignore[arg-type]
            error = refused.value.body
            assert isinstance(error, dict) and error["code"] == "would_cost", body
            assert "free-only" in error["message"] and words in error["message"], body
        # Every route runs the same check: Messages refuses in Anthropic's shape.
        with anthropic.Anthropic(base_url=proxy.url, api_key=secret, max_retries=0) as a:
            with pytest.raises(anthropic.PermissionDeniedError):
                a.messages.create(model=GPT, max_tokens=64, messages=HI)  # type: ignore[arg-type]
        posted = upstream_posts(fake)
        # A priced `models` entry is skipped, not refused, when a free one remains.
        mixed = sdk.chat.completions.create(
            model=SCOUT,
            messages=HI,  # type: ignore[arg-type]
            extra_body={"models": [GPT]},
        )
    assert posted == []
    assert mixed.choices[0].message.content == DEFAULT_CONTENT
    (sent,) = fake.chat_requests()
    assert sent.json is not None and GPT not in json.dumps(sent.json)


def _fail_every_free_model(fake: FakeOpenRouter) -> set[str]:
    free = {
        m["id"]
        for m in fake.models
        if m["pricing"].get("prompt") == "0" and m["pricing"].get("completion") == "0"
    }
    for model in free:
        fake.set_default(model, provider_502())
    return free


def test_free_with_a_free_only_key_never_reaches_a_priced_model_even_with_allow_paid(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    free = _fail_every_free_model(fake)
    free_only = create_key(db, "alice")
    paid = create_key(db, "bob", "--paid")
    with start_proxy(db_path=db, allow_paid=True, max_wait=0, max_attempts=20) as proxy:
        refused = chat(proxy.url, free_only, model="free")
        tried_by_alice = list(fake.attempts)
        served = chat(proxy.url, paid, model="free")  # the same walk with --paid goes on
    # Every free model was tried and failed; the priced tail of `free` was never offered.
    assert refused.status_code == 502
    assert tried_by_alice and set(tried_by_alice) <= free
    named = refused.json()["error"]["message"].partition("(")[2].partition(")")[0]
    assert set(named.split(", ")) <= free
    assert served.status_code == 200
    assert served.headers["X-Proxy-Model"] == SCOUT_PAID  # the cheapest priced model


# --- 8, 9. the account's free budget ---------------------------------------------------------


@contextmanager
def proxy_at_noon_utc(fake_url: str, **overrides: Any) -> Iterator[LiveServer]:
    """A proxy whose clock reads today's 12:00 UTC onwards: the fair-share reserves shrink
    over the day's last 4 hours, so the property of DESIGN §7 is checked in the 20 before."""
    offset = time.time() % 86400 - 43200
    app = create_app(make_settings(fake_url, **overrides), clock=lambda: time.time() - offset)
    with LiveServer(app) as server:
        yield server


# `:free` ids only: they share the account's free-tier counter. (`free` would also offer
# zero-priced models without the suffix, which OpenRouter does not count, openrouter-api.md §9.)
FREE_TIER = [SCOUT, MISTRAL, DEEPSEEK, QWEN]


def test_a_greedy_key_cannot_starve_the_others_of_a_budget_of_50(
    fake_server: LiveServer, fake: FakeOpenRouter, db: Path
):
    fake.free_rpd = 50  # GET /key reports 50 a day, and the fake refuses the 51st
    secrets = {name: create_key(db, name) for name in ("a", "b", "c")}
    settings = {"db_path": db, "upstream_rpm": 100_000, "upstream_rpd": 50, "max_wait": 0}
    with proxy_at_noon_utc(fake_server.url, **settings) as proxy:
        wait_for_budget(proxy.url, secrets["a"], remaining=50)

        def send(name: str, count: int) -> list[httpx.Response]:
            return [chat(proxy.url, secrets[name], models=FREE_TIER) for _ in range(count)]

        greedy, b, c = send("a", 100), send("b", 10), send("c", 10)
        report = httpx.get(f"{proxy.url}/v1/usage", headers=bearer(secrets["b"])).json()
    share = 50 // 3
    served_a = sum(r.status_code == 200 for r in greedy)
    assert [r.status_code for r in b + c] == [200] * 20
    # A took everything but the other two keys' unused shares, then was told why.
    assert served_a == 50 - 2 * share
    refusal = greedy[-1]
    assert refusal.status_code == 429 and "Retry-After" in refusal.headers
    assert "fair share being 16" in refusal.json()["error"]["message"]
    # The upstream saw exactly the calls that were served: none it would have refused.
    assert len(fake.attempts) == served_a + 20
    assert report["free_budget"]["share"] == share
    assert report["free_budget"]["used_by_key"] == 10
    assert report["free_budget"]["account_remaining_today"] == 50 - served_a - 20


def wait_for_budget(url: str, secret: str | None, *, remaining: int) -> None:
    """Until the proxy has followed GET /key, which it asks on its own at start-up."""
    headers = bearer(secret) if secret else {}

    def followed() -> bool:
        budget = httpx.get(f"{url}/v1/usage", headers=headers).json()["free_budget"]
        return bool(budget["account_remaining_today"] == remaining)

    wait_until(followed, message=f"account_remaining_today == {remaining}")


def test_with_get_key_reporting_3_remaining_the_fourth_free_call_is_refused(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.key_info["free_model_daily_requests"] = {"limit": 50, "remaining": 3, "used": 47}
    with start_proxy(max_wait=0) as proxy:
        wait_for_budget(proxy.url, None, remaining=3)
        answers = [chat(proxy.url) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[3]
    message = refused.json()["error"]["message"]
    assert "account's free-model allowance of 50 requests per day is used up" in message
    assert "resets at 00:00 UTC" in message
    assert int(refused.headers["Retry-After"]) > 0
    assert len(fake.chat_requests()) == 3


# --- 10. SIGTERM and restart -----------------------------------------------------------------


@contextmanager
def serve_process(db: Path, fake_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "OPENROUTER_API_KEY": FAKE_KEY,
        "OPENROUTER_BASE_URL": f"{fake_url}/api/v1",
        "PROXY_DB_PATH": str(db),
        "PROXY_UPSTREAM_RPM": "100000",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=db.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)  # waits, and closes the stderr pipe


def test_after_sigterm_and_a_restart_every_request_has_its_record_and_keys_are_intact(
    fake: FakeOpenRouter, fake_server: LiveServer, db: Path
):
    n = 30
    secret = create_key(db, "alice", "--rpd", str(n + 1), "--tpd", "1000000")
    keys_before = json.loads(run_cli("keys", "list", "--json", db=db).stdout)
    with serve_process(db, fake_server.url) as (url, process):
        with httpx.Client(base_url=url, headers=bearer(secret)) as client:
            body = {"model": SCOUT, "messages": HI}
            statuses = [client.post(CHAT, json=body).status_code for _ in range(n)]
        process.send_signal(signal.SIGTERM)  # at once: the last records are still queued
        _, errors = process.communicate(timeout=15)
    assert process.returncode == 0 and "Traceback" not in errors
    assert statuses == [200] * n

    rows = json.loads(run_cli("usage", "--key", "alice", "--json", db=db).stdout)
    assert sum(row["requests"] for row in rows) == n
    assert sum(row["errors"] for row in rows) == 0
    assert json.loads(run_cli("keys", "list", "--json", db=db).stdout) == keys_before

    with serve_process(db, fake_server.url) as (url, _):
        # The restart kept today's count: one request of the rpd is left, not n + 1.
        last = chat(url, secret)
        over = chat(url, secret)
    assert last.status_code == 200 and last.headers["x-ratelimit-remaining-requests"] == "0"
    assert over.status_code == 429
    assert f"rpd limit of {n + 1} requests per day" in over.json()["error"]["message"]


# --- 11. unusable databases ------------------------------------------------------------------
# A corrupted database: tests/test_team_cli.py::test_serve_refuses_a_corrupted_database_in_one_line
# (and ::test_corrupted_database_is_one_line_naming_the_file for every command). A read-only
# one: ::test_read_only_file_is_one_line (file modes, non-root) and the `serve` case below.


@needs_mount
def test_serve_on_a_read_only_database_is_one_start_up_line(db: Path):
    """`serve` on a database whose folder is mounted read-only (a Docker volume `:ro`)."""
    create_key(db, "alice")
    argv = [sys.executable, "-m", "app", "serve", "--port", str(free_port())]
    result = run_with_read_only(db.parent, argv, {"PROXY_DB_PATH": str(db)})
    assert one_error_line(result).startswith(f"openrouter-proxy: database {db} is read-only")


# --- headers and GET /v1/usage ---------------------------------------------------------------

RATELIMIT = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def test_every_response_of_a_limited_key_carries_the_ratelimit_headers(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice", "--rpm", "9", "--tpd", "100000")
    fake.set_default(DEEPSEEK, provider_502())
    with start_proxy(db_path=db, max_wait=0) as proxy:
        answers = {
            "answer": chat(proxy.url, secret),
            "stream": chat(proxy.url, secret, stream=True),
            "messages": httpx.post(
                f"{proxy.url}/v1/messages",
                json={"model": SCOUT, "max_tokens": 64, "messages": HI, "stream": True},
                headers={"x-api-key": secret},
            ),
            "would cost": chat(proxy.url, secret, model=GPT),
            "plugins": chat(proxy.url, secret, plugins=[{"id": "web"}]),
            "upstream failed": chat(proxy.url, secret, model=DEEPSEEK),
        }
        for _ in range(9):
            chat(proxy.url, secret)
        answers["over rpm"] = chat(proxy.url, secret)
    assert answers["stream"].headers["content-type"].startswith("text/event-stream")
    assert [answers[w].status_code for w in ("would cost", "plugins", "upstream failed")] == [
        403,
        403,
        502,
    ]
    assert answers["over rpm"].status_code == 429
    for what, answer in answers.items():
        missing = [h for h in RATELIMIT if h not in answer.headers]
        assert not missing, (what, answer.status_code, missing)
    assert answers["answer"].headers["x-ratelimit-limit-requests"] == "9"
    assert answers["answer"].headers["x-ratelimit-remaining-requests"] == "8"
    assert answers["stream"].headers["x-ratelimit-remaining-requests"] == "7"
    assert answers["over rpm"].headers["x-ratelimit-remaining-requests"] == "0"


def test_get_v1_usage_shows_the_live_quotas_the_share_and_counts_toward_none(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, db: Path
):
    secret = create_key(db, "alice", "--rpm", "3", "--rpd", "10", "--tpd", "5000")
    create_key(db, "bob", "--concurrency", "1")
    with start_proxy(db_path=db) as proxy:
        answers = [chat(proxy.url, secret) for _ in range(2)]
        tokens = sum(a.json()["usage"]["total_tokens"] for a in answers)
        reports = [
            httpx.get(f"{proxy.url}/v1/usage", headers=bearer(secret)).json() for _ in range(5)
        ]
        still = chat(proxy.url, secret)  # the 5 reports took none of the rpm of 3
        unknown = httpx.get(f"{proxy.url}/v1/usage", headers=bearer("sk-proxy-nope"))
    report = reports[-1]
    assert report["key"] == "alice"
    assert report["limits"] == {"rpm": 3, "rpd": 10, "tpd": 5000, "concurrency": None}
    assert report["used"] == {"rpm": 2, "rpd": 2, "tpd": tokens, "concurrency": None}
    assert report["remaining"] == {"rpm": 1, "rpd": 8, "tpd": 5000 - tokens, "concurrency": None}
    now = time.time()
    assert now < report["resets_at"]["rpm"] <= now + 60
    assert report["resets_at"]["rpd"] == report["resets_at"]["tpd"]
    assert report["resets_at"]["rpd"] % 86400 == 0 and report["resets_at"]["concurrency"] is None
    # The free allowance GET /key reports (the fake's large one), shared by two keys.
    budget = report["free_budget"]
    assert budget["used_by_key"] == 2
    assert budget["share"] == budget["account_limit_today"] // 2
    assert budget["account_remaining_today"] == budget["account_limit_today"] - 2
    assert still.status_code == 200
    assert unknown.status_code == 401
