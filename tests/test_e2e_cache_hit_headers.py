"""A cache hit's response as a client receives it (DESIGN §4, §7, §8; issue 28): a hit's
headers are encoded by the proxy itself (app/api/replayed.py), so this checks on the wire
that it still carries what an answer carries, the same body, and writes the same usage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import orjson

from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply
from tests.test_e2e_cache import create_keys

BODY = {"model": SCOUT, "messages": [{"role": "user", "content": "hello"}], "temperature": 0}
# Set on every response, whatever it carries: they differ from one request to the next.
PER_REQUEST = {"date", "x-request-id", "server-timing", "x-cache", "x-proxy-attempts"}


def test_a_keyed_hit_carries_every_header_of_the_answer_it_replays(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    (secret,) = create_keys(tmp_path / "proxy.db", "alice", rpm=100, rpd=1000, tpd=100_000)
    fake.script(SCOUT, Reply(content="stored answer"))
    auth = {"Authorization": f"Bearer {secret}"}
    with start_proxy(db_path=tmp_path / "proxy.db") as proxy:
        with httpx.Client(base_url=proxy.url, headers=auth) as client:
            miss = client.post("/v1/chat/completions", json=BODY)
            hit = client.post("/v1/chat/completions", json=BODY, headers={"X-Request-Id": "r-42"})
            streamed = client.post("/v1/chat/completions", json={**BODY, "stream": True})
        db_path = proxy.app.state.services.settings.db_path
    assert (miss.status_code, hit.status_code) == (200, 200)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.content == miss.content
    assert hit.headers["content-length"] == str(len(hit.content))
    assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
    # Every header the answer had, with the same value unless it is the request's own.
    assert sorted(hit.headers.keys()) == sorted(miss.headers.keys())
    for name in set(miss.headers.keys()) - PER_REQUEST:
        if not name.startswith("x-ratelimit-"):  # the key's counts as they are now
            assert hit.headers[name] == miss.headers[name], name
    assert hit.headers["x-generation-id"] == miss.headers["x-generation-id"]
    assert hit.headers["x-proxy-model"] == SCOUT
    assert hit.headers["x-proxy-attempts"] == "0"
    assert hit.headers["x-request-id"] == "r-42"
    assert hit.headers["server-timing"].startswith("proxy;dur=")
    assert int(hit.headers["x-ratelimit-remaining-requests"]) == 98  # rpm 100: the third
    # A stream request served from the same entry: OpenAI's chunks, as an event stream.
    assert streamed.headers["x-cache"] == "HIT"
    assert streamed.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert streamed.headers["cache-control"] == "no-cache"
    events = [e for e in streamed.content.split(b"\n\n") if e.startswith(b"data: {")]
    content = "".join(
        orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events
    )
    assert content == "stored answer"
    assert streamed.content.endswith(b"data: [DONE]\n\n")
    assert len(fake.requests_to("/api/v1/chat/completions")) == 1
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT cache, status, served_model, attempts, prompt_tokens, cost FROM usage "
            "WHERE key = 'alice' ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == ["miss", "hit", "hit"]
    assert rows[1][1:] == (200, SCOUT, 0, 0, 0.0)
