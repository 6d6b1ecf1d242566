"""Tokens of a stream cut before its usage chunk still count (DESIGN §7): the proxy counts
what it relayed (4 bytes a token) and the request's own prompt estimate toward `tpd` and
the usage record, and marks the record's usage as estimated. Real proxy, fake OpenRouter,
a key made with the real CLI, the openai SDK as the client that leaves."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT, Drop, FakeOpenRouter, Reply
from tests.test_e2e_team import bearer, create_key

T = TypeVar("T")
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CONTENT = "word " * 200  # 1,000 bytes of text: 250 tokens at 4 bytes a token
TPD = 1_000  # four such streams (and their prompts) pass it, three do not


def poll(probe: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    """`probe()`'s first truthy value, asked until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def used_tpd(url: str, secret: str) -> int:
    report = httpx.get(f"{url}/v1/usage", headers=bearer(secret)).json()
    return int(report["used"]["tpd"])


def tpd_above(url: str, secret: str, last: int) -> Callable[[], int]:
    """A probe: GET /v1/usage's `used.tpd` once it is above `last`, else 0."""

    def probe() -> int:
        used = used_tpd(url, secret)
        return used if used > last else 0

    return probe


def records(db: Path) -> list[dict[str, Any]]:
    """The usage records of answered requests (the proxy has stopped: all are written)."""
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        rows = connection.execute(
            "SELECT status, prompt_tokens, completion_tokens, cost, estimated FROM usage"
            " WHERE attempts > 0 ORDER BY id"
        )
        return [dict(row) for row in rows]
    finally:
        connection.close()


def leave_after_the_finish(client: OpenAI) -> None:
    """Read the stream up to `finish_reason: "stop"`, then close it, as a client that has
    its answer and goes: the usage chunk, which comes after, is never read."""
    stream = client.chat.completions.create(model=SCOUT, messages=HI, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason == "stop":
            break
    else:
        raise AssertionError("the stream ended before its finish")
    stream.close()


def test_streams_cut_before_their_usage_count_toward_tpd_as_estimated(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    db = tmp_path / "proxy.db"
    secret = create_key(db, "alice", "--tpd", str(TPD))
    # The usage chunk would come 30 s after the finish: every client has left by then.
    fake.set_default(SCOUT, Reply(content=CONTENT, chunks=10, usage_delay=30.0))

    with start_proxy(db_path=db) as proxy:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=secret, max_retries=0) as client:
            used = 0
            for _ in range(4):
                leave_after_the_finish(client)
                # The next request must meet this one's tokens: wait until they count.
                used = poll(tpd_above(proxy.url, secret, used), "the cut stream's tokens")
            fifth = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": SCOUT, "messages": HI, "stream": True},
                headers=bearer(secret),
            )
    rows = records(db)

    assert used >= TPD
    assert fifth.status_code == 429, fifth.text
    assert f"tpd limit of {TPD} tokens per day reached for key 'alice'" in fifth.text
    # Each stream: the 250 completion tokens relayed, and its own prompt estimate.
    assert [row["status"] for row in rows] == [499] * 4
    assert [row["completion_tokens"] for row in rows] == [250] * 4
    assert all(row["prompt_tokens"] > 0 for row in rows)
    assert all(row["estimated"] == 1 and row["cost"] is None for row in rows)
    assert sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows) == used


def test_a_stream_the_upstream_broke_counts_what_was_relayed(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    db = tmp_path / "proxy.db"
    secret = create_key(db, "alice", "--tpd", str(TPD))
    # A whole stream first (its usage is reported), then one cut after 500 bytes of text.
    fake.script(SCOUT, Reply(), Drop(after_chunks=2, content=CONTENT, chunks=4))
    body = {"model": SCOUT, "messages": HI, "stream": True}

    with start_proxy(db_path=db) as proxy:
        chat = f"{proxy.url}/v1/chat/completions"
        whole = httpx.post(chat, json=body, headers=bearer(secret))
        reported = poll(lambda: used_tpd(proxy.url, secret), "the whole stream's tokens")
        cut = httpx.post(chat, json=body, headers=bearer(secret))
        used = poll(tpd_above(proxy.url, secret, reported), "the broken stream's tokens")
    kept, broken = records(db)

    assert whole.status_code == cut.status_code == 200
    assert (
        cut.text.endswith("data: [DONE]\n\n") and "the connection to OpenRouter broke" in cut.text
    )
    assert kept["estimated"] == 0 and kept["prompt_tokens"] + kept["completion_tokens"] == reported
    assert broken["completion_tokens"] == 125 and broken["estimated"] == 1
    assert used - reported == broken["prompt_tokens"] + broken["completion_tokens"]
