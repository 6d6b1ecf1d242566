"""An open stream holds nothing of its request once committed (issue 28): a thousand open
streams of 200 KB prompts must not hold 200 MB of bodies, as much again of parsed JSON,
or the client's headers. Checked on the real proxy while the stream is open (upstream
silent after its first content): what the garbage collector still reaches, and which large
blocks allocated by the proxy's own code are still alive."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import httpx

from app.api.pipeline import Flow
from app.request import ParsedRequest
from app.upstream.relay import EventStreamResponse
from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Stall

APP = Path(__file__).resolve().parent.parent / "app"
PROMPT = ("A pasted document, line after line of it.\n" * 5000)[: 200 * 1024]
CLIENT_KEY = "sk-proxy-memory-test-marker"  # open mode: sent, read, never needed after


def large_blocks_from_app(snapshot: tracemalloc.Snapshot) -> list[str]:
    """Live blocks of 100 KB or more allocated while the proxy's own code ran."""
    ours = snapshot.filter_traces([tracemalloc.Filter(True, f"{APP}/*", all_frames=True)])
    return [
        f"{trace.size} bytes at {trace.traceback[0]}"
        for trace in ours.traces
        if trace.size >= 100_000
    ]


def test_an_open_stream_holds_neither_the_body_nor_its_json_nor_the_client_headers(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Stall(seconds=30, after_chunks=1))  # content, then keep-alives only
    body = {
        "model": SCOUT,
        "models": [SCOUT],  # a walked field: the body going up is a rewritten copy
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
    }
    tracemalloc.start(30)
    try:
        with (
            start_proxy() as proxy,
            httpx.stream(
                "POST",
                f"{proxy.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                timeout=10,
            ) as response,
        ):
            assert response.status_code == 200  # committed: the first content came
            gc.collect()
            live = gc.get_objects()
            # This request's only (other tests' may linger); type(), not isinstance: a
            # lazy proxy (the openai SDK's) imports its module on `__class__`.
            requests = [
                o
                for o in live
                if (type(o) is ParsedRequest and len(o.raw) > len(PROMPT))
                or (type(o) is Flow and o.headers.get("authorization") == f"Bearer {CLIENT_KEY}")
            ]
            headers = [
                o
                for o in live
                if type(o) is dict and o.get("authorization") == f"Bearer {CLIENT_KEY}"
            ]
            large = large_blocks_from_app(tracemalloc.take_snapshot())
            del live
    finally:
        tracemalloc.stop()

    assert requests == []
    assert headers == []
    assert large == []


def test_an_open_stream_has_let_go_of_its_response_head_once_sent(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """Starlette keeps a response's header list for the response's life: ~1.2 KB a stream
    for its whole length, after the head went out (bench/README.md, "Memory per open
    stream"). The client still gets every header."""
    fake.script(SCOUT, Stall(seconds=30, after_chunks=1))
    body = {"model": SCOUT, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        start_proxy() as proxy,
        httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=10) as sent,
    ):
        assert sent.status_code == 200  # committed: the first content came
        gc.collect()
        held = [o.raw_headers for o in gc.get_objects() if type(o) is EventStreamResponse]
    assert held == [[]]
    assert sent.headers["content-type"].startswith("text/event-stream")
    assert sent.headers["cache-control"] == "no-cache"
    assert sent.headers["x-accel-buffering"] == "no"
