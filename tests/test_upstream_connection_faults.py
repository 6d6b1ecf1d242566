"""Connections that break (DESIGN §6): one made and then reset is a broken attempt of that
model, and the walk goes on; one never made is OpenRouter unreachable, and the walk stops;
a kept-alive connection the upstream closed just as it was reused is sent once more on a
fresh one, unseen by fallback. Through the real proxy, with a TCP hop in front of the fake
OpenRouter that breaks connections as a network does (`tests/faulty_link.py`)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from app.deps import Services
from app.main import create_app
from tests.conftest import CLIENT_KEY, make_settings
from tests.fake_openrouter import DEFAULT_CONTENT, QWEN, SCOUT, FakeOpenRouter
from tests.faulty_link import FaultyLink
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def link(fake_server: LiveServer) -> Iterator[FaultyLink]:
    with FaultyLink(fake_server.port) as hop:
        yield hop


@contextmanager
def proxy_through(link: FaultyLink, **overrides: Any) -> Iterator[tuple[LiveServer, Services]]:
    app = create_app(make_settings(link.url, **overrides))
    with LiveServer(app) as server:
        yield server, app.state.services


def failing(services: Services, model: str) -> set[str]:
    return set(asyncio.run(services.cooldowns.snapshot([model], time.time())).failing)


def post(proxy: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json={"messages": HELLO, **body}, timeout=20
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_reset_before_the_answer_is_a_broken_attempt_and_the_next_model_answers(
    link: FaultyLink, fake: FakeOpenRouter, stream: bool
) -> None:
    link.reset.add(SCOUT)
    with proxy_through(link) as (proxy, services):
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=SCOUT,
                messages=HELLO,  # type: ignore[arg-type]
                extra_body={"models": [QWEN]},
                stream=stream,
            )
            if stream:
                chunks = raw.parse()
                content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                content = raw.parse().choices[0].message.content
        marked = failing(services, SCOUT)

    assert content == DEFAULT_CONTENT
    assert raw.headers["X-Proxy-Model"] == QWEN
    assert raw.headers["X-Proxy-Attempts"] == "2"
    assert link.fresh_resets == 1  # (one on a reused connection would be resent first)
    assert marked == {SCOUT}  # a broken attempt: tried after the others for a while
    assert [r.model for r in fake.chat_requests()] == [QWEN]


def test_a_lone_model_that_resets_is_a_502_that_does_not_blame_the_network(
    link: FaultyLink,
) -> None:
    link.reset.add(SCOUT)
    with proxy_through(link) as (proxy, _):
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model=SCOUT, messages=HELLO)  # type: ignore[arg-type]

    error = raised.value
    assert error.status_code == 502
    assert error.code == "upstream_bad_response", error.body
    assert "closed the connection" in error.message
    assert "OPENROUTER_BASE_URL" not in error.message
    assert error.response.headers["X-Proxy-Attempts"] == "2"  # a lone one is tried again
    assert link.fresh_resets == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_unreachable_and_stops_the_walk() -> None:
    settings = make_settings(f"http://127.0.0.1:{_closed_port()}")
    with LiveServer(create_app(settings)) as proxy:
        response = post(proxy, model=SCOUT, models=[QWEN])

    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert "OPENROUTER_BASE_URL" in response.json()["error"]["message"]
    assert response.headers["X-Proxy-Attempts"] == "1"  # every model is behind that host


def test_a_kept_alive_connection_closed_as_it_is_reused_is_sent_again_unseen(
    link: FaultyLink, fake: FakeOpenRouter
) -> None:
    with proxy_through(link) as (proxy, services):
        first = post(proxy, model=SCOUT)
        link.close_reused = True  # the upstream's idle timeout fires as the next one arrives
        second = post(proxy, model=SCOUT)
        marked = failing(services, SCOUT)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert link.closed_reused == 1  # the request did meet a connection closing under it
    assert second.headers["X-Proxy-Attempts"] == "1"
    assert marked == set()
    assert [r.model for r in fake.chat_requests()] == [SCOUT, SCOUT]
