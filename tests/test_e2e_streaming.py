"""Streams are relayed as they arrive, and a client leaving closes the upstream at once."""

from __future__ import annotations

import time

import httpx
from openai import OpenAI

from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "hi"}]


def leave_after_first_content(proxy: LiveServer, marker: str) -> None:
    """Stream from the proxy, then hang up as soon as a line containing `marker` arrives."""
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        json={"model": SCOUT, "messages": HELLO, "stream": True},
    ) as response:
        for line in response.iter_lines():
            if marker in line:
                return
    raise AssertionError(f"the stream ended without {marker}")


def test_first_content_chunk_arrives_before_upstream_sends_the_second(
    client: OpenAI, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="aaaa bbbb cccc dddd", chunks=4, chunk_delay=0.2))

    stream = client.chat.completions.create(model=SCOUT, messages=HELLO, stream=True)  # type: ignore[arg-type]
    content_at = [
        time.monotonic() for chunk in stream if chunk.choices and chunk.choices[0].delta.content
    ]
    first_content_at = content_at[0]

    (sent,) = fake.chat_requests()
    data_events = fake.sent_at[sent.request_id]  # role chunk, then content chunks
    second_content_sent_at = data_events[2]
    assert first_content_at < second_content_sent_at


def test_client_closing_mid_stream_closes_the_upstream_within_a_second(
    proxy: LiveServer, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="x" * 40, chunks=40, chunk_delay=0.2))
    leave_after_first_content(proxy, '"content":"x')
    closed_at = time.monotonic()
    assert fake.closed_event.wait(timeout=1.0)
    assert time.monotonic() - closed_at < 1.0
    (sent,) = fake.chat_requests()
    assert fake.closed_early == [sent.request_id]
    assert len(fake.sent_at[sent.request_id]) < 10  # the fake stopped sending


def test_client_closing_during_a_silent_upstream_still_closes_it(
    proxy: LiveServer, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="ab", chunks=2, chunk_delay=5.0))
    leave_after_first_content(proxy, '"content":"a')
    assert fake.closed_event.wait(timeout=1.0)
