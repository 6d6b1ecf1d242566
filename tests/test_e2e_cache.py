"""The response cache against the real proxy and the live fake (DESIGN §4 X-Cache, §8; issue 19):
what a hit serves through the SDKs, what is never stored, scopes, single-flight, the byte bound
and what a hit costs."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest

from app.deps import Services
from app.team.store import Team
from tests.conftest import CLIENT_KEY, ProxyFactory
from tests.fake_openrouter import (
    EMBED,
    EMBEDDINGS_PATH,
    MESSAGES_PATH,
    MISTRAL,
    RESPONSES_PATH,
    SCOUT,
    SCOUT_PAID,
    Drop,
    FakeOpenRouter,
    FinishError200,
    HttpError,
    Reply,
    Stall,
    bad_request_400,
)
from tests.live_server import LiveServer
from tests.polling import wait_until

CHAT_PATH = "/api/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]
CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
T = TypeVar("T")


@contextmanager
def openai_sdk(proxy: LiveServer, key: str = CLIENT_KEY) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0) as sdk:
        yield sdk


def services(proxy: LiveServer) -> Services:
    found: Services = proxy.app.state.services
    return found


def on_loop(proxy: LiveServer, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the proxy's own loop (its stores are not thread-safe)."""
    assert proxy.loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, proxy.loop).result(10)


def chat(sdk: openai.OpenAI, **fields: Any) -> tuple[Any, httpx.Headers]:
    """A non-stream chat completion and its response headers."""
    fields.setdefault("model", SCOUT)
    fields.setdefault("messages", HELLO)
    fields.setdefault("temperature", 0)
    raw = sdk.chat.completions.with_raw_response.create(**fields)
    return raw.parse(), raw.headers


def chat_stream(sdk: openai.OpenAI, **fields: Any) -> tuple[str, list[Any], httpx.Headers]:
    """A streamed chat completion as the SDK parses it: content, tool calls, headers."""
    fields.setdefault("model", SCOUT)
    fields.setdefault("messages", HELLO)
    fields.setdefault("temperature", 0)
    raw = sdk.chat.completions.with_raw_response.create(stream=True, **fields)
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in raw.parse():
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or call.id
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
    return "".join(content), [calls[i] for i in sorted(calls)], raw.headers


def tool_calls(message: Any) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or ()
    ]


def entries(proxy: LiveServer) -> int:
    return on_loop(proxy, services(proxy).cache.store.stats()).entries


# --- 1. the second identical request is a hit ------------------------------------------------


def test_second_identical_request_is_a_hit_and_upstream_saw_one(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="first answer"), Reply(content="second answer"))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        first, first_headers = chat(sdk)
        second, second_headers = chat(sdk)
    assert first_headers["x-cache"] == "MISS"
    assert second_headers["x-cache"] == "HIT"
    assert second.choices[0].message.content == "first answer"
    assert second.id == first.id
    assert len(fake.requests_to(CHAT_PATH)) == 1
    assert second_headers["x-proxy-model"] == first_headers["x-proxy-model"] == SCOUT
    assert second_headers["x-proxy-attempts"] == "0"  # no upstream attempt was made


def test_a_hit_on_free_names_the_model_that_answered(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        _, miss = chat(sdk, model="free")
        _, hit = chat(sdk, model="free")
    assert (miss["x-cache"], hit["x-cache"]) == ("MISS", "HIT")
    assert miss["x-proxy-model"].endswith(":free")
    assert hit["x-proxy-model"] == miss["x-proxy-model"]
    assert hit["x-generation-id"] == miss["x-generation-id"]


def test_not_deterministic_is_bypass_and_all_mode_caches_it(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        _, first = chat(sdk, temperature=0.7)
        _, second = chat(sdk, temperature=0.7)
        assert (first["x-cache"], second["x-cache"]) == ("BYPASS", "BYPASS")
        assert entries(proxy) == 0
    with start_proxy(cache="all") as proxy, openai_sdk(proxy) as sdk:
        assert [chat(sdk, temperature=0.7)[1]["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    with start_proxy(cache="off") as proxy, openai_sdk(proxy) as sdk:
        assert [chat(sdk)[1]["x-cache"] for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert len(fake.requests_to(CHAT_PATH)) == 2 + 1 + 2


# --- 2. one entry serves both modes on chat ---------------------------------------------------


def test_stream_hit_after_a_non_stream_answer_parses_with_the_same_tool_call(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="", tool_call=CALL))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        stored, miss = chat(sdk, tools=[WEATHER_TOOL])
        content, calls, hit = chat_stream(sdk, tools=[WEATHER_TOOL])
    message = stored.choices[0].message
    assert (miss["x-cache"], hit["x-cache"]) == ("MISS", "HIT")
    assert hit["content-type"].startswith("text/event-stream")
    assert tool_calls(message) == calls
    assert calls[0]["name"] == "get_weather" and calls[0]["arguments"] == CALL["arguments"]
    assert content == (message.content or "")
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_non_stream_hit_after_a_stream_has_the_same_content_and_tool_call(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="Let me look.", chunks=4, tool_call=CALL))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        content, calls, miss = chat_stream(sdk, tools=[WEATHER_TOOL])
        answer, hit = chat(sdk, tools=[WEATHER_TOOL])
        again, _, hit_stream = chat_stream(sdk, tools=[WEATHER_TOOL])
    assert (miss["x-cache"], hit["x-cache"], hit_stream["x-cache"]) == ("MISS", "HIT", "HIT")
    message = answer.choices[0].message
    assert content == message.content == again == "Let me look."
    assert tool_calls(message) == calls
    assert answer.choices[0].finish_reason == "tool_calls"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_stream_hit_sends_usage_only_when_asked(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        chat(sdk)
        plain = list(
            sdk.chat.completions.create(model=SCOUT, messages=HELLO, temperature=0, stream=True)
        )
        counted = list(
            sdk.chat.completions.create(
                model=SCOUT,
                messages=HELLO,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert all(chunk.usage is None for chunk in plain)
    assert counted[-1].choices == [] and counted[-1].usage is not None
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_legacy_completions_serve_both_modes_from_one_entry(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="Once upon a time", chunks=4))
    fields: dict[str, Any] = {"model": SCOUT, "prompt": "Tell a story", "temperature": 0}
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        streamed = sdk.completions.with_raw_response.create(stream=True, **fields)
        text = "".join(c.choices[0].text for c in streamed.parse() if c.choices)
        whole = sdk.completions.with_raw_response.create(**fields)
        again = sdk.completions.with_raw_response.create(stream=True, **fields)
        replayed = [c for c in again.parse() if c.choices]
    assert [r.headers["x-cache"] for r in (streamed, whole, again)] == ["MISS", "HIT", "HIT"]
    assert text == whole.parse().choices[0].text == "Once upon a time"
    assert "".join(c.choices[0].text for c in replayed) == text
    assert replayed[-1].choices[0].finish_reason == "stop"
    assert len(fake.requests_to("/api/v1/completions")) == 1


# --- 3. every field that changes the answer is in the key ------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"tools": [WEATHER_TOOL]}, {}),
        (
            {"response_format": {"type": "json_object"}},
            {"response_format": {"type": "text"}},
        ),
        ({"seed": 1}, {"seed": 2}),
    ],
    ids=["tools", "response_format", "seed"],
)
def test_requests_differing_in_one_field_are_two_entries(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, one: dict[str, Any], other: dict[str, Any]
):
    fake.script(SCOUT, Reply(content="answer one"), Reply(content="answer two"))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        first, first_headers = chat(sdk, **one)
        second, second_headers = chat(sdk, **other)
        assert (first_headers["x-cache"], second_headers["x-cache"]) == ("MISS", "MISS")
        assert entries(proxy) == 2
        assert chat(sdk, **one)[0].choices[0].message.content == "answer one"
        assert chat(sdk, **other)[0].choices[0].message.content == "answer two"
    assert len(fake.requests_to(CHAT_PATH)) == 2


def test_user_and_object_key_order_do_not_split_entries(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """Bodies as raw text, so the key order on the wire really differs."""
    hi, hi_reordered = '{"role":"user","content":"hi"}', '{"content":"hi","role":"user"}'
    one = f'{{"model":"{SCOUT}","temperature":0,"user":"a","messages":[{hi}]}}'
    other = f'{{"messages":[{hi_reordered}],"user":"b","temperature":0,"model":"{SCOUT}"}}'
    with start_proxy() as proxy:
        url = f"{proxy.url}/v1/chat/completions"
        first, second = (httpx.post(url, content=body.encode()) for body in (one, other))
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")


# --- 4. Cache-Control -------------------------------------------------------------------------


def test_no_store_bypasses_and_stores_nothing(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="one"), Reply(content="two"), Reply(content="three"))
    no_store = {"Cache-Control": "no-store"}
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        chat(sdk)  # stored: "one"
        bypassed, headers = chat(sdk, extra_headers=no_store)
        assert headers["x-cache"] == "BYPASS"
        assert bypassed.choices[0].message.content == "two"  # no lookup
        assert chat(sdk)[0].choices[0].message.content == "one"  # the entry is untouched
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        _, headers = chat(sdk, extra_headers=no_store)
        assert headers["x-cache"] == "BYPASS"
        assert entries(proxy) == 0
        assert chat(sdk)[1]["x-cache"] == "MISS"


def test_no_cache_misses_and_refreshes_the_entry(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="old"), Reply(content="new"))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        chat(sdk)
        fresh, headers = chat(sdk, extra_headers={"Cache-Control": "no-cache"})
        later, later_headers = chat(sdk)
    assert headers["x-cache"] == "MISS"
    assert fresh.choices[0].message.content == "new"
    assert later_headers["x-cache"] == "HIT"
    assert later.choices[0].message.content == "new"
    assert len(fake.requests_to(CHAT_PATH)) == 2


# --- 5. what is never stored ------------------------------------------------------------------


def test_an_upstream_error_is_not_cached(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, bad_request_400("temperature is out of range"), Reply(content="recovered"))
    with start_proxy(max_wait=0) as proxy, openai_sdk(proxy) as sdk:
        with pytest.raises(openai.BadRequestError) as failed:
            chat(sdk)
        assert failed.value.response.headers["x-cache"] == "MISS"
        assert entries(proxy) == 0
        answer, headers = chat(sdk)
    assert headers["x-cache"] == "MISS"
    assert answer.choices[0].message.content == "recovered"


def test_a_mid_stream_failure_is_not_cached(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, FinishError200(after_chunks=1), Drop(after_chunks=1), Reply(content="ok"))
    with start_proxy(max_wait=0) as proxy, openai_sdk(proxy) as sdk:
        for _ in range(2):
            with pytest.raises(openai.APIError):
                chat_stream(sdk)
            assert entries(proxy) == 0
        content, _, headers = chat_stream(sdk)
    assert headers["x-cache"] == "MISS" and content == "ok"
    assert len(fake.requests_to(CHAT_PATH)) == 3


def test_an_abandoned_stream_is_not_cached(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="a slow long answer", chunks=6, chunk_delay=0.3))
    fake.script(SCOUT, Reply(content="complete"))
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        stream = sdk.chat.completions.create(
            model=SCOUT, messages=HELLO, temperature=0, stream=True
        )
        next(iter(stream))
        stream.close()
        assert fake.closed_event.wait(10)
        # The next identical request is not left waiting on the abandoned one's flight.
        content, _, headers = chat_stream(sdk, timeout=10)
    assert headers["x-cache"] == "MISS" and content == "complete"


ROUTES = {
    "responses": ("/v1/responses", RESPONSES_PATH, {"input": "hello"}),
    "messages": ("/v1/messages", MESSAGES_PATH, {"max_tokens": 50, "messages": HELLO}),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_failed_and_abandoned_streams_are_not_cached_on_responses_and_messages(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, route: str
):
    path, upstream_path, fields = ROUTES[route]
    body = {"model": SCOUT, "temperature": 0, "stream": True, **fields}
    fake.script(SCOUT, FinishError200(after_chunks=1), Drop(after_chunks=1))
    fake.script(SCOUT, Reply(content="slow", chunks=6, chunk_delay=0.3), Reply(content="ok"))
    with start_proxy(max_wait=0) as proxy, httpx.Client(base_url=proxy.url, timeout=10) as http:
        for _ in range(2):  # an in-stream failure, then a dropped connection
            failed = http.post(path, json=body)
            assert failed.status_code == 200 and b"error" in failed.content
            assert failed.headers["x-cache"] == "MISS"
            assert entries(proxy) == 0
        with http.stream("POST", path, json=body) as abandoned:
            next(abandoned.iter_raw())
        assert fake.closed_event.wait(10)
        clean = http.post(path, json=body)
        assert clean.headers["x-cache"] == "MISS"
        assert http.post(path, json=body).headers["x-cache"] == "HIT"
    assert len(fake.requests_to(upstream_path)) == 4


# --- 6. scope ---------------------------------------------------------------------------------


def create_keys(db_path: Path, *names: str, **limits: Any) -> list[str]:
    """Keys made before the proxy starts, so its key ring holds them from the first request."""
    team = Team(db_path)
    try:
        return [team.keys.create(name, **limits) for name in names]
    finally:
        team.keyring.close()
        team.keys.close()


def test_key_scope_keeps_entries_private(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    fake.script(SCOUT, Reply(content="for alice"), Reply(content="for bob"))
    alice, bob = create_keys(tmp_path / "proxy.db", "alice", "bob")
    with start_proxy(db_path=tmp_path / "proxy.db") as proxy:
        with openai_sdk(proxy, alice) as a, openai_sdk(proxy, bob) as b:
            assert chat(a)[1]["x-cache"] == "MISS"
            answer, headers = chat(b)
            assert headers["x-cache"] == "MISS"
            assert answer.choices[0].message.content == "for bob"
            assert chat(a)[0].choices[0].message.content == "for alice"
            assert chat(b)[0].choices[0].message.content == "for bob"
    assert len(fake.requests_to(CHAT_PATH)) == 2


def test_global_scope_shares_entries(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    alice, bob = create_keys(tmp_path / "proxy.db", "alice", "bob")
    with start_proxy(cache_scope="global", db_path=tmp_path / "proxy.db") as proxy:
        with openai_sdk(proxy, alice) as a, openai_sdk(proxy, bob) as b:
            assert chat(a)[1]["x-cache"] == "MISS"
            assert chat(b)[1]["x-cache"] == "HIT"
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_a_shared_entry_never_serves_a_key_a_model_it_may_not_use(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    """Global scope shares answers, not permissions: a key limited to `*:free` still gets its
    403 for a priced model another key's answer is cached for."""
    db = tmp_path / "proxy.db"
    (rich,) = create_keys(db, "rich", paid=True)
    (limited,) = create_keys(db, "limited", models=["*:free"])
    with start_proxy(cache_scope="global", db_path=db) as proxy:
        with openai_sdk(proxy, rich) as a, openai_sdk(proxy, limited) as b:
            assert chat(a, model=SCOUT_PAID)[1]["x-cache"] == "MISS"
            with pytest.raises(openai.PermissionDeniedError) as refused:
                chat(b, model=SCOUT_PAID)
            assert chat(a, model=SCOUT_PAID)[1]["x-cache"] == "HIT"
    assert refused.value.response.headers["x-cache"] == "MISS"
    assert len(fake.requests_to(CHAT_PATH)) == 1


# --- 7. single-flight -------------------------------------------------------------------------


BODY = {"model": SCOUT, "messages": HELLO, "temperature": 0}


def fire_together(
    proxy: LiveServer, n: int, body: dict[str, Any]
) -> list[tuple[httpx.Response, float]]:
    """`n` identical POSTs let go at once by a barrier: each answer and its seconds."""
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[httpx.Response, float]:
        with httpx.Client(base_url=proxy.url, timeout=60) as http:
            barrier.wait()
            started = time.monotonic()
            answer = http.post("/v1/chat/completions", json=body)
            return answer, time.monotonic() - started

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def post_many(proxy: LiveServer, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    return [answer for answer, _ in fire_together(proxy, n, body)]


def test_twenty_identical_requests_make_one_upstream_call(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="shared", first_byte_delay=1.0))
    with start_proxy() as proxy:
        answers = post_many(proxy, 20, BODY)
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.json()["choices"][0]["message"]["content"] for r in answers} == {"shared"}
    assert sorted(r.headers["x-cache"] for r in answers) == ["HIT"] * 19 + ["MISS"]
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_when_the_shared_call_fails_every_waiter_answers_its_error_from_that_one_call(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """Issue 23: the waiters get the leader's failure, same status and body; the call that
    failed is not made again once per waiter (a second call would be answered 200)."""
    refused = bad_request_400("Provider refused the request")
    fake.script(SCOUT, HttpError(refused.status, refused.body, delay=1.0))
    fake.set_default(SCOUT, Reply(content="a second call"))
    with start_proxy() as proxy:
        answers = post_many(proxy, 20, BODY)
    assert [r.status_code for r in answers] == [400] * 20
    assert len({r.content for r in answers}) == 1
    assert answers[0].json()["error"]["message"].endswith("Provider refused the request")
    assert {r.headers["x-cache"] for r in answers} == {"MISS"}
    assert sorted(r.headers["x-proxy-attempts"] for r in answers) == ["0"] * 19 + ["1"]
    assert len({r.headers["x-request-id"] for r in answers}) == 20
    assert len(fake.requests_to(CHAT_PATH)) == 1


def test_waiters_on_a_stalled_model_get_its_504_as_soon_and_as_cheaply_as_a_lone_request(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """Issue 23: a failed shared call is not tried again once per waiter, and no waiter
    waits longer than its own request would have taken (DESIGN §8, §12). The lone request
    shows what one request costs here: two attempts of the lone candidate and the pause."""
    fake.set_default(SCOUT, Stall(seconds=30))
    with start_proxy(first_byte_timeout=1.0, total_timeout=1.5) as proxy:
        ((lone, lone_took),) = fire_together(proxy, 1, BODY)
        lone_calls = len(fake.requests_to(CHAT_PATH))
        together = fire_together(proxy, 10, BODY)
    calls = len(fake.requests_to(CHAT_PATH)) - lone_calls
    answers = [answer for answer, _ in together]
    assert lone.status_code == 504
    assert [r.status_code for r in answers] == [504] * 10
    assert all(r.json() == lone.json() for r in answers), (lone.json(), answers[0].json())
    assert calls <= lone_calls
    slowest = max(took for _, took in together)
    assert slowest <= lone_took + 1.0, (slowest, lone_took)


def test_leaders_whose_streams_break_hand_over_one_at_a_time_then_the_rest_go_alone(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """A leader whose stream broke after its first content (its client got 200 and an error
    event) has nothing to share: one waiter takes over. After three such leaders in a row
    the other seven stop waiting and each makes its own call at once. Read from when the
    fake saw each call arrive and sent its first content: a call that arrives before the
    previous stream could idle out was not waiting for it."""
    idle = 1.0
    fake.set_default(SCOUT, Stall(seconds=30, after_chunks=1))
    with start_proxy(stream_idle_timeout=idle) as proxy:
        answers = post_many(proxy, 10, {**BODY, "stream": True})
    assert [r.status_code for r in answers] == [200] * 10
    assert all('"finish_reason":"error"' in r.text for r in answers)
    calls = sorted(fake.requests_to(CHAT_PATH), key=lambda r: r.arrived_at)
    assert len(calls) == 10
    content_at = {r.request_id: fake.sent_at[r.request_id][0] for r in calls}
    for leader, successor in zip(calls[:3], calls[1:4], strict=True):
        assert successor.arrived_at >= content_at[leader.request_id] + idle
    alone = calls[3:]
    assert max(r.arrived_at for r in alone) < min(content_at[r.request_id] for r in alone) + idle


def test_when_the_leaders_client_leaves_the_waiters_are_still_answered(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="never seen", first_byte_delay=2.0))
    fake.script(SCOUT, Reply(content="second try", first_byte_delay=0.5))
    with start_proxy() as proxy, ThreadPoolExecutor(1) as pool:
        url = f"{proxy.url}/v1/chat/completions"
        impatient = pool.submit(httpx.post, url, json=BODY, timeout=0.5)
        wait_until(lambda: fake.requests_to(CHAT_PATH), message="the impatient one to lead")
        answers = post_many(proxy, 10, BODY)
        with pytest.raises(httpx.TimeoutException):
            impatient.result()
    assert [r.status_code for r in answers] == [200] * 10
    assert {r.json()["choices"][0]["message"]["content"] for r in answers} == {"second try"}
    assert len(fake.requests_to(CHAT_PATH)) == 2


# --- 8. the byte bound ------------------------------------------------------------------------


def test_filling_twice_the_bound_keeps_the_measured_size_under_it(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    bound_mb = 0.05
    bound = int(bound_mb * 1024 * 1024)
    fake.set_default(SCOUT, Reply(content="x" * 2000))
    with start_proxy(cache_max_mb=bound_mb) as proxy, openai_sdk(proxy) as sdk:
        stored = 0
        n = 0
        while stored < 2 * bound:
            answer, _ = chat(sdk, messages=[{"role": "user", "content": f"question {n}"}])
            stored += len(answer.model_dump_json())
            n += 1
            stats = on_loop(proxy, services(proxy).cache.store.stats())
            assert stats.bytes <= bound
        assert 0 < stats.entries < n
        _, oldest = chat(sdk, messages=[{"role": "user", "content": "question 0"}])
        _, newest = chat(sdk, messages=[{"role": "user", "content": f"question {n - 1}"}])
    assert (oldest["x-cache"], newest["x-cache"]) == ("MISS", "HIT")


# --- 9. accounting ----------------------------------------------------------------------------


def test_a_hit_spends_no_budget_counts_for_rpm_rpd_not_tpd_and_records_a_free_hit(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    (secret,) = create_keys(tmp_path / "proxy.db", "alice", rpm=100, rpd=1000, tpd=100_000)
    with start_proxy(db_path=tmp_path / "proxy.db") as proxy:
        found = services(proxy)
        (key,) = [k for k in found.team.keyring.keys() if k.name == "alice"]

        def measure() -> tuple[Any, Any]:
            now = found.clock()
            budget = on_loop(proxy, found.gate.free_budget("alice"))
            quotas = on_loop(proxy, found.gate.quotas.snapshot(key, now))
            return budget, quotas

        with openai_sdk(proxy, secret) as sdk:
            assert chat(sdk)[1]["x-cache"] == "MISS"
            budget_before, quotas_before = measure()
            assert chat(sdk)[1]["x-cache"] == "HIT"
            budget_after, quotas_after = measure()
        db_path = found.settings.db_path
    assert budget_after == budget_before
    assert quotas_after["rpm"]["used"] == quotas_before["rpm"]["used"] + 1
    assert quotas_after["rpd"]["used"] == quotas_before["rpd"]["used"] + 1
    assert quotas_before["tpd"]["used"] > 0
    assert quotas_after["tpd"]["used"] == quotas_before["tpd"]["used"]
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT cache, cost, prompt_tokens, completion_tokens, served_model FROM usage "
            "WHERE key = 'alice' ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == ["miss", "hit"]
    assert rows[1][1:4] == (0.0, 0, 0)
    assert rows[1][4] == SCOUT


# --- 10. Responses, Messages, embeddings ------------------------------------------------------


def test_responses_hits_replay_in_the_stored_mode(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="json answer"), Reply(content="streamed answer"))
    fields = {"model": SCOUT, "input": "hello", "temperature": 0}
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        first = sdk.responses.with_raw_response.create(**fields)
        second = sdk.responses.with_raw_response.create(**fields)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.headers["content-type"].startswith("application/json")
        assert second.parse().output_text == first.parse().output_text == "json answer"

        def streamed() -> tuple[str, str, list[str]]:
            raw = sdk.responses.with_raw_response.create(stream=True, **fields)
            events = list(raw.parse())
            done = [e for e in events if e.type == "response.completed"]
            assert len(done) == 1
            return raw.headers["x-cache"], done[0].response.output_text, [e.type for e in events]

        miss, text, miss_events = streamed()
        hit, hit_text, hit_events = streamed()
    assert (miss, hit) == ("MISS", "HIT")
    assert text == hit_text == "streamed answer"
    assert hit_events == miss_events
    assert len(fake.requests_to(RESPONSES_PATH)) == 2


def test_messages_hits_replay_in_the_stored_mode(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="json answer"), Reply(content="streamed answer"))
    fields: dict[str, Any] = {
        "model": SCOUT,
        "max_tokens": 100,
        "extra_body": {"temperature": 0},  # this SDK's signature has no `temperature`
        "messages": [{"role": "user", "content": "hello"}],
    }
    with start_proxy() as proxy:
        with anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0) as sdk:
            first = sdk.messages.with_raw_response.create(**fields)
            second = sdk.messages.with_raw_response.create(**fields)
            assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
            assert second.parse().content[0].text == "json answer"  # type: ignore[union-attr]

            def streamed() -> tuple[str, str]:
                with sdk.messages.stream(**fields) as stream:
                    text = "".join(stream.text_stream)
                    stop = stream.get_final_message().stop_reason
                    assert stop == "end_turn"
                    return stream.response.headers["x-cache"], text

            miss = streamed()
            hit = streamed()
    assert miss == ("MISS", "streamed answer")
    assert hit == ("HIT", "streamed answer")
    assert len(fake.requests_to(MESSAGES_PATH)) == 2


def test_embeddings_are_eligible_without_temperature(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with start_proxy() as proxy, openai_sdk(proxy) as sdk:
        first = sdk.embeddings.with_raw_response.create(model=EMBED, input="hello")
        second = sdk.embeddings.with_raw_response.create(model=EMBED, input="hello")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert len(fake.requests_to(EMBEDDINGS_PATH)) == 1


# --- X-Cache on every response ----------------------------------------------------------------


def test_x_cache_rides_on_errors_too(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    """BYPASS when the request is not eligible (or not even readable), MISS when it is but
    was not answered from the cache, whichever step refused it."""
    fake.script(MISTRAL, bad_request_400("temperature is out of range"))
    (secret,) = create_keys(tmp_path / "proxy.db", "alice", rpm=1)
    with start_proxy(db_path=tmp_path / "proxy.db", max_body_mb=0.001) as proxy:
        url = f"{proxy.url}/v1/chat/completions"
        alice = {"Authorization": f"Bearer {secret}"}
        bad_json = httpx.post(url, content=b"{not json", headers=alice)
        too_large = httpx.post(url, content=b" " * 2000, headers=alice)
        no_key = httpx.post(url, json=BODY)
        upstream = httpx.post(url, json={**BODY, "model": MISTRAL}, headers=alice)
        over_quota = httpx.post(url, json=BODY, headers=alice)
        not_eligible = httpx.post(url, json={**BODY, "temperature": 1}, headers=alice)
    with start_proxy(openrouter_api_key=None) as proxy:
        no_upstream_key = httpx.post(f"{proxy.url}/v1/chat/completions", json=BODY)
    seen = {
        name: (response.status_code, response.headers.get("x-cache"))
        for name, response in [
            ("bad_json", bad_json),
            ("too_large", too_large),
            ("no_key", no_key),
            ("upstream", upstream),
            ("over_quota", over_quota),
            ("not_eligible", not_eligible),
            ("no_upstream_key", no_upstream_key),
        ]
    }
    assert seen == {
        "bad_json": (400, "BYPASS"),
        "too_large": (413, "BYPASS"),
        "no_key": (401, "MISS"),
        "upstream": (400, "MISS"),
        "over_quota": (429, "MISS"),
        "not_eligible": (429, "BYPASS"),
        "no_upstream_key": (503, "MISS"),
    }
    assert upstream.headers["x-proxy-attempts"] == "1"  # OpenRouter's 400, relayed
