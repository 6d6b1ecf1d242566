"""Self-test of the fake OpenRouter over real HTTP, so proxy tests can trust what it sends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_openrouter import (
    CATALOGUE,
    EMBED,
    EMBED_FREE,
    EMBEDDINGS_PATH,
    FAKE_KEY,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SCOUT,
    CutOff,
    Drop,
    EmptyData,
    ErrorBody200,
    FakeOpenRouter,
    FinishError200,
    Reply,
    Stall,
    WhitespaceOnly,
    error_200,
    fake_embedding,
    free_per_day,
    overloaded_529,
    overloaded_midstream,
    provider_429,
    unavailable_503,
)
from tests.live_server import LiveServer

AUTH = {"Authorization": f"Bearer {FAKE_KEY}"}
MSG = [{"role": "user", "content": "hi"}]
FREE = "meta-llama/llama-4-scout:free"
PAID = "openai/gpt-4o-mini"
REQUIRED = {
    "id",
    "canonical_slug",
    "name",
    "created",
    "pricing",
    "context_length",
    "architecture",
    "top_provider",
    "per_request_limits",
    "supported_parameters",
    "default_parameters",
    "supported_voices",
    "links",
}


class Clock:
    """Injectable wall clock, so minute/day windows are tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_790_000_030.0)


@pytest.fixture
def fake(clock: Clock) -> FakeOpenRouter:
    return FakeOpenRouter(clock=clock)


@pytest.fixture
def client(fake: FakeOpenRouter) -> Iterator[httpx.Client]:
    with LiveServer(fake.app) as server:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=5.0) as c:
            yield c


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post(
        "/chat/completions", headers=AUTH, json={"model": model, "messages": MSG, **extra}
    )


def events(text: str) -> list[str]:
    """Split an SSE body into its raw events (comments kept)."""
    return [e for e in text.split("\n\n") if e]


def data(event: str) -> Any:
    assert event.startswith("data: "), event
    payload = event[len("data: ") :]
    return payload if payload == "[DONE]" else json.loads(payload)


def test_catalogue_shape(client: httpx.Client, fake: FakeOpenRouter) -> None:
    body = client.get("/models").json()  # no auth needed
    assert body["links"] == {"next": None} and body["total_count"] == len(body["data"])
    by_id = {m["id"]: m for m in body["data"]}
    assert len(by_id) == len(CATALOGUE) == 15
    for m in body["data"]:
        assert REQUIRED <= m.keys()
        assert {"modality", "input_modalities", "output_modalities"} <= m["architecture"].keys()
        assert all(isinstance(v, str) for k, v in m["pricing"].items() if k != "discount")
    assert by_id[PAID]["pricing"]["discount"] == 0
    assert by_id["openrouter/auto"]["pricing"]["prompt"] == "-1"
    assert by_id["openrouter/auto"]["context_length"] is None
    assert set(by_id["openrouter/free"]["pricing"].values()) == {"0"}
    assert by_id["google/gemini-2.5-flash-image-preview"]["pricing"]["image_output"] != "0"
    assert "tools" not in by_id["deepseek/deepseek-r1:free"]["supported_parameters"]
    for embedder in (EMBED, EMBED_FREE):  # not text chat models, so never in the `free` pool
        assert by_id[embedder]["architecture"]["output_modalities"] == ["embeddings"]
    assert float(by_id[EMBED]["pricing"]["prompt"]) > 0
    assert set(by_id[EMBED_FREE]["pricing"].values()) == {"0"}
    fake.models_fail = True
    assert client.get("/models").status_code == 500


def test_auth_errors_and_key(client: httpx.Client) -> None:
    missing = client.get("/key")
    assert missing.status_code == 401
    assert missing.json() == {"error": {"message": "No auth credentials found", "code": 401}}
    wrong = client.post("/chat/completions", headers={"Authorization": "Bearer sk-or-v1-x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "User not found."
    for path in ("/key", "/auth/key"):
        info = client.get(path, headers=AUTH).json()["data"]
        unset = {"limit": 1_000_000, "remaining": 1_000_000, "used": 0}  # free_rpd unset
        assert info["free_model_daily_requests"] == unset
        assert info["rate_limit"]["note"].startswith("This field is deprecated")


def test_non_stream_reply(client: httpx.Client) -> None:
    r = chat(client, PAID, stream=False)
    assert r.status_code == 200
    assert r.content[:1] == b"{"
    r = client.post(
        "/chat/completions",
        headers=AUTH,
        json={"model": "openrouter/auto", "messages": MSG},
    )
    body = r.json()
    assert body["model"] == PAID  # the model that actually answered
    assert r.headers["x-generation-id"] == body["id"]
    assert body["id"].startswith("gen-") and len(body["id"].split("-")[2]) == 20
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hello from the fake"
    assert choice["finish_reason"] == choice["native_finish_reason"] == "stop"
    assert body["usage"]["cost"] > 0 and "x-ratelimit-limit" not in r.headers


def test_leading_whitespace_arrives_before_json(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, Reply(leading_whitespace=3, first_byte_delay=0.2))
    with client.stream("POST", "/chat/completions", headers=AUTH, json={"model": PAID}) as r:
        parts = list(r.iter_raw())
    assert parts[0].isspace() and len(parts[0]) == 3
    assert json.loads(b"".join(parts))["model"] == PAID


def test_stream_order(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(FREE, Reply(content="abcdef", chunks=3, keepalives=2))
    r = chat(client, FREE, stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    ev = events(r.text)
    assert ev[:2] == [": OPENROUTER PROCESSING"] * 2
    chunks = [data(e) for e in ev[2:]]
    assert chunks[-1] == "[DONE]"
    role, *content, finish, usage, _ = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["ab", "cd", "ef"]
    assert role["object"] == "chat.completion.chunk" and role["model"] == FREE
    assert {"id", "provider", "created"} <= role.keys()
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["native_finish_reason"] == "stop"
    assert usage["choices"] == [] and "cost" in usage["usage"]
    assert len({c["id"] for c in chunks[:-1]}) == 1


def test_scripted_429_then_success_and_fallback_walk(
    client: httpx.Client, fake: FakeOpenRouter
) -> None:
    fake.script(FREE, provider_429(FREE), Reply(content="second"))
    first = chat(client, FREE)
    assert first.status_code == 429
    err = first.json()["error"]
    assert err["message"] == "Provider returned error"
    assert err["metadata"]["limit_source"] == "upstream_provider_shared_pool"
    assert "rate-limited upstream" in err["metadata"]["raw"]
    assert chat(client, FREE).json()["choices"][0]["message"]["content"] == "second"
    assert chat(client, FREE).json()["choices"][0]["message"]["content"] == "Hello from the fake"
    # OpenRouter-native `models` walk: the answer names the model that succeeded.
    fake.script("qwen/qwen3-coder:free", unavailable_503(7))
    walked = chat(client, "x", models=["qwen/qwen3-coder:free", "nope/none", PAID])
    assert walked.status_code == 200 and walked.json()["model"] == PAID
    assert fake.attempts[-3:] == ["qwen/qwen3-coder:free", "nope/none", PAID]
    fake.script(FREE, unavailable_503(7))
    failed = chat(client, FREE, models=["nope/none", FREE])
    assert failed.status_code == 503 and failed.headers["retry-after"] == "7"
    too_many = chat(client, FREE, models=[FREE, PAID, PAID, PAID])
    assert too_many.json()["error"]["message"] == "models array must have 3 items or fewer"
    assert chat(client, "acme/fake-1.0").json()["error"]["message"] == (
        "acme/fake-1.0 is not a valid model ID"
    )
    assert len(fake.chat_requests()) == 7


def test_free_limits_with_injected_clock(
    client: httpx.Client, fake: FakeOpenRouter, clock: Clock
) -> None:
    fake.free_rpm = 2
    assert chat(client, FREE).status_code == 200
    assert chat(client, "qwen/qwen3-coder:free").status_code == 200  # one account-wide bucket
    limited = chat(client, FREE)
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    reset = str((int(clock.now // 60) + 1) * 60_000)
    assert limited.headers["x-ratelimit-reset"] == reset
    assert limited.headers["x-ratelimit-limit"] == "2"
    err = limited.json()["error"]
    assert err["message"] == "Rate limit exceeded: free-models-per-min. "
    assert err["metadata"] == {
        "headers": {
            "X-RateLimit-Limit": "2",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset,
        },
        "provider_name": None,
    }
    assert chat(client, PAID).status_code == 200  # paid models are not capped
    clock.now += 60
    assert chat(client, FREE).status_code == 200
    fake.free_rpd = 5  # 4 free attempts so far today, the 429 included
    assert chat(client, FREE).status_code == 200
    daily = chat(client, FREE)
    meta = daily.json()["error"]["metadata"]
    assert daily.status_code == 429 and meta["limit_source"] == "openrouter_free_tier_daily"
    assert int(daily.headers["x-ratelimit-reset"]) % 86_400_000 == 0
    quota = client.get("/key", headers=AUTH).json()["data"]["free_model_daily_requests"]
    assert quota == {"limit": 5, "remaining": 0, "used": 6}
    fake.provider_rpm[PAID] = 1
    assert chat(client, PAID).status_code == 200
    assert chat(client, PAID).json()["error"]["metadata"]["provider_name"] == "Venice"


def test_in_band_errors(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, error_200(), error_200(), FinishError200(done=False), FinishError200())
    body = chat(client, PAID).json()
    assert "choices" not in body and body["error"]["code"] == 429 and "user_id" in body
    ev = events(chat(client, PAID, stream=True).text)
    assert ev[0] == ": OPENROUTER PROCESSING" and len(ev) == 2
    assert data(ev[1]).keys() == {"error", "user_id"}
    ev = events(chat(client, PAID, stream=True).text)
    last = data(ev[-1])
    assert last["error"]["code"] == 429 and last["choices"][0]["finish_reason"] == "error"
    body = chat(client, PAID).json()
    assert body["choices"][0]["finish_reason"] == "error" and body["choices"][0]["error"]
    assert isinstance(ErrorBody200({}).error, dict)


def test_broken_bodies(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, WhitespaceOnly(), CutOff(), Drop(after_chunks=1))
    blank = chat(client, PAID)
    assert blank.status_code == 200 and blank.content.isspace()
    with pytest.raises(json.JSONDecodeError):
        chat(client, PAID).json()
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, PAID, stream=True)


def test_stall_keeps_alive_then_replies(client: httpx.Client, fake: FakeOpenRouter) -> None:
    fake.script(PAID, Stall(0.3))
    started = time.monotonic()
    ev = events(chat(client, PAID, stream=True).text)
    assert time.monotonic() - started >= 0.3
    assert ev.count(": OPENROUTER PROCESSING") >= 5 and ev[-1] == "data: [DONE]"


def test_disconnect_recorded_and_chunks_really_stream(
    client: httpx.Client, fake: FakeOpenRouter
) -> None:
    fake.script(PAID, Reply(chunks=5, chunk_delay=0.3))
    body = {"model": PAID, "messages": MSG, "stream": True}
    headers = {**AUTH, "X-Request-Id": "abc"}
    with client.stream("POST", "/chat/completions", headers=headers, json=body) as r:
        lines = r.iter_lines()
        while '"content":"H' not in next(lines):
            pass
        got_first = time.monotonic()
    assert fake.closed_event.wait(2.0)
    assert fake.closed_early == ["abc"]
    sent = fake.sent_at["abc"]  # role chunk, content 1, maybe content 2 - never all 5
    assert len(sent) < 5
    assert len(sent) == 2 or got_first < sent[2]


@pytest.mark.anyio
async def test_wait_closed_async(fake: FakeOpenRouter) -> None:
    fake.script(PAID, Reply(first_byte_delay=5.0))
    with LiveServer(fake.app) as server:
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as c:
            body = {"model": PAID, "stream": True}
            async with c.stream("POST", "/chat/completions", headers=AUTH, json=body) as r:
                assert r.status_code == 200  # headers are committed before the first token
        assert await fake.wait_closed(2.0)


# ---------------------------------------------------------------------------------------------
# The other inference routes (§11-§14), checked with the real SDKs pointed straight at the fake
# ---------------------------------------------------------------------------------------------

WEATHER = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": {}, "strict": False}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def url(fake: FakeOpenRouter) -> Iterator[str]:
    with LiveServer(fake.app) as server:
        yield server.url


@pytest.fixture
def sdk(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/api/v1", api_key=FAKE_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def claude(url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=f"{url}/api", api_key=FAKE_KEY, max_retries=0) as c:
        yield c


def post(url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1{path}", json=body, headers={**AUTH, **headers}, timeout=5)


def test_responses_with_openai_sdk(sdk: openai.OpenAI, url: str, fake: FakeOpenRouter) -> None:
    raw = sdk.responses.with_raw_response.create(model=PAID, input="Say hello")
    answer = raw.parse()
    assert raw.headers["x-generation-id"] == answer.id and answer.id.startswith("gen-")
    assert answer.object == "response" and answer.status == "completed"
    assert answer.model == PAID and answer.output_text == "Hello from the fake"
    usage = answer.usage
    assert usage is not None and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert (usage.model_extra or {})["cost"] > 0

    fake.script(FREE, Reply(content="abcdef", chunks=3))
    streamed = list(sdk.responses.create(model=FREE, input="hi", stream=True))
    assert [e.type for e in streamed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == "abcdef"
    done = streamed[-1]
    assert done.type == "response.completed" and done.response.output_text == "abcdef"
    assert done.response.usage is not None and streamed[0].response.usage is None

    fake.script(FREE, Reply(keepalives=2))  # the framing the SDK hides: data-only, [DONE]
    ev = events(post(url, "/responses", {"model": FREE, "input": "hi", "stream": True}).text)
    assert ev[:2] == [": OPENROUTER PROCESSING"] * 2 and ev[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in ev[2:])


def test_responses_reasoning_and_tool_call(sdk: openai.OpenAI, fake: FakeOpenRouter) -> None:
    fake.script(FREE, Reply(content="", reasoning="think first", tool_call=WEATHER))
    with sdk.responses.stream(model=FREE, input="weather?", tools=[WEATHER_TOOL]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds
    assert kinds.count("response.function_call_arguments.delta") == 2
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "think first"
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    # Without `tools` in the request the same behaviour answers in text only.
    fake.script(FREE, Reply(tool_call=WEATHER))
    plain = sdk.responses.create(model=FREE, input="weather?")
    assert [item.type for item in plain.output] == ["message"]


def test_responses_failures(sdk: openai.OpenAI, url: str, fake: FakeOpenRouter) -> None:
    fake.script(FREE, provider_429(FREE))
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.responses.create(model=FREE, input="hi")
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["metadata"]["provider_name"] == "Venice"  # ordinary envelope

    fake.script(FREE, error_200(), error_200(), FinishError200(after_chunks=1))
    with pytest.raises(openai.APIError, match="free-models-per-day"):  # in-band, before content
        list(sdk.responses.create(model=FREE, input="hi", stream=True))
    failed = sdk.responses.create(model=FREE, input="hi")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "rate_limit_exceeded"
    assert (failed.model_extra or {})["error_type"] == "rate_limit_exceeded"
    ev = events(post(url, "/responses", {"model": FREE, "input": "hi", "stream": True}).text)
    last = data(ev[-2])
    assert ev[-1] == "data: [DONE]" and last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "rate_limit_exceeded"
    assert last["response"]["error_type"] == "rate_limit_exceeded"
    assert [data(e)["type"] for e in ev[1:-2]][-1] == "response.output_text.delta"

    fake.script(FREE, Drop(after_chunks=1))
    with pytest.raises(openai.APIConnectionError):
        list(sdk.responses.create(model=FREE, input="hi", stream=True))


def test_messages_with_anthropic_sdk(
    claude: anthropic.Anthropic, url: str, fake: FakeOpenRouter
) -> None:
    raw = claude.messages.with_raw_response.create(model=PAID, max_tokens=50, messages=HELLO)
    message = raw.parse()
    assert raw.headers["x-generation-id"] == message.id and message.id.startswith("gen-")
    assert message.type == "message" and message.role == "assistant" and message.model == PAID
    assert message.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "Hello from the fake")
    ]
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert (message.usage.model_extra or {})["cost"] > 0
    assert "anthropic-version" in fake.requests_to(MESSAGES_PATH)[-1].headers

    fake.script(FREE, Reply(content="abcdef", chunks=3, reasoning="hmm ok", done=False))
    with claude.messages.stream(model=FREE, max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "abcdef" and [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"

    fake.script(FREE, Reply(content="", tool_call=WEATHER, done=False))
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with claude.messages.stream(model=FREE, max_tokens=50, messages=HELLO, tools=tools) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert final.content[0].name == "get_weather" and final.content[0].input == {"city": "Paris"}


def test_messages_stream_wire_order(
    claude: anthropic.Anthropic, url: str, fake: FakeOpenRouter
) -> None:
    fake.script(FREE, Reply(content="ab", chunks=2))
    body = {"model": FREE, "max_tokens": 5, "messages": HELLO, "stream": True}
    ev = events(post(url, "/messages", body).text)
    assert ev[0] == ": OPENROUTER PROCESSING" and ev[-1] == "event: data\ndata: [DONE]"
    names = [e.split("\n")[0].removeprefix("event: ") for e in ev[1:-1]]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = json.loads(ev[-3].split("\ndata: ")[1])
    assert delta["delta"]["stop_reason"] == "end_turn" and "cost" in delta["usage"]
    # OpenRouter's `event: data` / [DONE] tail is not JSON: this anthropic SDK chokes on it
    # after the whole message arrived, so a relay in front of OpenRouter has to drop it.
    with pytest.raises(json.JSONDecodeError):
        with claude.messages.stream(model=FREE, max_tokens=5, messages=HELLO) as stream:
            stream.get_final_message()


def test_messages_errors_and_routing(
    claude: anthropic.Anthropic, url: str, fake: FakeOpenRouter
) -> None:
    fake.script(FREE, free_per_day(1_790_035_200_000), overloaded_529(), overloaded_midstream())
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model=FREE, max_tokens=5, messages=HELLO)
    body = limited.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["request_id"] is None
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["error_type"] == "rate_limit_exceeded"
    assert limited.value.response.headers["x-ratelimit-reset"] == "1790035200000"
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model=FREE, max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.APIStatusError) as mid:  # `event: error` after content
        list(claude.messages.create(model=FREE, max_tokens=5, messages=HELLO, stream=True))
    assert mid.value.status_code == 200
    assert isinstance(mid.value.body, dict)
    assert mid.value.body["error"]["type"] == "overloaded_error"

    denied = httpx.post(f"{url}/api/v1/messages", json={}, headers={"x-api-key": "sk-or-v1-x"})
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    good = {"model": "nope/none", "max_tokens": 5, "messages": HELLO}
    by_key = httpx.post(f"{url}/api/v1/messages", json=good, headers={"x-api-key": FAKE_KEY})
    assert by_key.json()["error"]["type"] == "invalid_request_error"  # authenticated; bad model
    fake.script(FREE, unavailable_503(3))
    walked = post(url, "/messages", {**good, "model": FREE, "fallbacks": [{"model": PAID}]})
    assert walked.status_code == 200 and walked.json()["model"] == PAID
    assert fake.attempts[-2:] == [FREE, PAID]
    both = post(url, "/messages", {**good, "fallbacks": [{"model": PAID}], "models": [PAID]})
    assert both.status_code == 400 and both.json()["type"] == "error"
    assert post(url, "/messages/count_tokens?beta=true", good).status_code == 404


def test_embeddings_with_openai_sdk(sdk: openai.OpenAI, url: str, fake: FakeOpenRouter) -> None:
    got = sdk.embeddings.create(model=EMBED, input=["red apple", "green"])  # SDK asks base64
    assert got.object == "list" and got.model == EMBED
    assert [d.index for d in got.data] == [0, 1]
    assert got.data[0].embedding == fake_embedding(EMBED, "red apple")
    assert got.data[1].embedding == fake_embedding(EMBED, "green")
    assert got.usage.prompt_tokens == got.usage.total_tokens == 3
    assert (got.usage.model_extra or {})["cost"] > 0
    one = post(url, "/embeddings", {"model": EMBED_FREE, "input": "red apple", "dimensions": 4})
    assert "x-generation-id" not in one.headers
    vectors = one.json()["data"]
    assert vectors == [
        {"object": "embedding", "embedding": fake_embedding(EMBED_FREE, "red apple", 4), "index": 0}
    ]
    assert vectors[0]["embedding"] != fake_embedding(EMBED, "red apple", 4)  # tells models apart

    fake.script(EMBED, provider_429(EMBED), error_200(), EmptyData())
    with pytest.raises(openai.RateLimitError):
        sdk.embeddings.create(model=EMBED, input="x")
    in_body = post(url, "/embeddings", {"model": EMBED, "input": "x"})
    assert in_body.status_code == 200 and "data" not in in_body.json()
    empty = post(url, "/embeddings", {"model": EMBED, "input": "x", "stream": True})
    assert empty.headers["content-type"] == "application/json"  # never a stream
    assert empty.status_code == 200 and empty.json()["data"] == []
    fake.script(EMBED, EmptyData())
    with pytest.raises(ValueError, match="No embedding data"):
        sdk.embeddings.create(model=EMBED, input="x")
    assert len(fake.requests_to(EMBEDDINGS_PATH)) == 6


def test_completions_with_openai_sdk(sdk: openai.OpenAI, url: str, fake: FakeOpenRouter) -> None:
    done = sdk.completions.create(model=PAID, prompt="Once upon")
    assert done.object == "text_completion" and done.model == PAID
    assert done.choices[0].text == "Hello from the fake"
    assert done.choices[0].finish_reason == "stop" and done.usage is not None
    fake.script(FREE, Reply(content="abcdef", chunks=3))
    chunks = list(sdk.completions.create(model=FREE, prompt="Once upon", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "abcdef"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    fake.script(FREE, Reply(keepalives=2))
    ev = events(post(url, "/completions", {"model": FREE, "prompt": "x", "stream": True}).text)
    assert ev[:2] == [": OPENROUTER PROCESSING"] * 2 and ev[-1] == "data: [DONE]"
    assert data(ev[2])["choices"][0]["text"] == "Hello "  # no role chunk: text from the start

    fake.script(FREE, provider_429(FREE), FinishError200(), FinishError200(done=False))
    with pytest.raises(openai.RateLimitError):
        sdk.completions.create(model=FREE, prompt="x")
    with pytest.raises(openai.APIError, match="Rate limit exceeded"):
        list(sdk.completions.create(model=FREE, prompt="x", stream=True))
    ev = events(post(url, "/completions", {"model": FREE, "prompt": "x", "stream": True}).text)
    last = data(ev[-1])
    assert last["choices"][0]["finish_reason"] == "error" and last["error"]["code"] == 429


def test_routes_share_scripts_limits_and_disconnects(
    sdk: openai.OpenAI, url: str, fake: FakeOpenRouter
) -> None:
    fake.script(FREE, Reply(content="one"), Reply(content="two"))  # one queue for every route
    assert sdk.responses.create(model=FREE, input="x").output_text == "one"
    assert sdk.completions.create(model=FREE, prompt="x").choices[0].text == "two"
    fake.free_rpm = 3  # one account-wide bucket: the two above plus this one
    assert post(url, "/messages", {"model": SCOUT, "messages": HELLO}).status_code == 200
    limited = post(url, "/responses", {"model": FREE, "input": "x"})
    assert limited.status_code == 429 and "x-ratelimit-reset" in limited.headers
    fake.free_rpm = None
    fake.script("qwen/qwen3-coder:free", unavailable_503(1))
    walked = sdk.responses.create(
        model="x", input="x", extra_body={"models": ["qwen/qwen3-coder:free", PAID]}
    )
    assert walked.model == PAID and fake.attempts[-2:] == ["qwen/qwen3-coder:free", PAID]
    assert len(fake.requests_to(RESPONSES_PATH)) == 3

    fake.script(PAID, Reply(chunks=5, chunk_delay=0.3))
    body = {"model": PAID, "messages": HELLO, "stream": True}
    headers = {**AUTH, "X-Request-Id": "msg-1"}
    with httpx.stream("POST", f"{url}/api/v1/messages", json=body, headers=headers) as r:
        lines = r.iter_lines()
        while "text_delta" not in next(lines):
            pass
    assert fake.closed_event.wait(2.0) and fake.closed_early == ["msg-1"]


def test_chat_tool_call(sdk: openai.OpenAI, fake: FakeOpenRouter) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    fake.script(FREE, Reply(content="", tool_call=WEATHER), Reply(content="", tool_call=WEATHER))
    answer = sdk.chat.completions.create(model=FREE, messages=HELLO, tools=tools)
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls" and calls is not None
    assert calls[0].type == "function" and calls[0].function.arguments == WEATHER["arguments"]
    chunks = list(sdk.chat.completions.create(model=FREE, messages=HELLO, tools=tools, stream=True))
    pieces = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert pieces[0].function is not None and pieces[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in pieces if p.function) == WEATHER["arguments"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
