"""Responses, Anthropic Messages, embeddings and legacy completions through the real proxy in
front of the live fake, each driven by its real client library (DESIGN §4, issue 17)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, ProxyFactory
from tests.fake_openrouter import (
    COMPLETIONS_PATH,
    DEEPSEEK,
    EMBED,
    EMBEDDINGS_PATH,
    FAKE_KEY,
    MESSAGES_PATH,
    MISTRAL,
    QWEN,
    R1,
    RESPONSES_PATH,
    SCOUT,
    CutOff,
    FakeOpenRouter,
    HttpError,
    Reply,
    fake_embedding,
    overloaded_529,
    overloaded_midstream,
    provider_429,
    provider_502,
)
from tests.live_server import LiveServer

PAIR = {"pair": [SCOUT, MISTRAL]}
# Each scenario on its own models: a model that failed is cooling or ranked behind others.
CHAINS = {"pair": [SCOUT, MISTRAL], "cut": [QWEN, DEEPSEEK]}
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@contextmanager
def openai_sdk(proxy: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as c:
        yield c


@contextmanager
def anthropic_sdk(proxy: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0) as c:
        yield c


def sent_to(fake: FakeOpenRouter, path: str) -> list[Any]:
    return [r.json for r in fake.requests_to(path)]


# --- Responses ------------------------------------------------------------------------------


def test_responses_non_stream_stream_and_tool(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, Reply(content="plain answer"), Reply(content="streamed answer"))
    fake.script(SCOUT, Reply(content="", tool_call=CALL))

    with start_proxy() as proxy, openai_sdk(proxy) as client:
        raw = client.responses.with_raw_response.create(model=SCOUT, input="Say hi")
        streamed = "".join(
            event.delta
            for event in client.responses.create(model=SCOUT, input="Say hi", stream=True)
            if event.type == "response.output_text.delta"
        )
        tooled = client.responses.create(
            model=SCOUT,
            input="Weather in Paris?",
            tools=[WEATHER_TOOL_OPENAI],  # type: ignore[list-item]
        )

    assert raw.parse().output_text == "plain answer"
    assert raw.headers["X-Proxy-Model"] == SCOUT
    assert streamed == "streamed answer"
    (call,) = [item for item in tooled.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    sent = sent_to(fake, RESPONSES_PATH)
    assert [body["model"] for body in sent] == [SCOUT, SCOUT, SCOUT]
    assert fake.requests_to(RESPONSES_PATH)[0].headers["authorization"] == f"Bearer {FAKE_KEY}"


def test_responses_fall_back_before_content_and_raise_after_it(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, Reply(content="from B"))
    fake.script(QWEN, CutOff())
    fake.script(DEEPSEEK, Reply(content="from D"))
    fake.script(R1, overloaded_midstream())

    with start_proxy(chains=CHAINS, max_wait=0) as proxy, openai_sdk(proxy) as client:
        raw = client.responses.with_raw_response.create(model="pair", input="hi")
        streamed = "".join(
            e.delta
            for e in client.responses.create(model="cut", input="hi", stream=True)
            if e.type == "response.output_text.delta"
        )
        events: list[str] = []
        with pytest.raises(openai.APIError):
            for event in client.responses.create(model=R1, input="hi", stream=True):
                events.append(event.type)

    assert raw.headers["X-Proxy-Model"] == MISTRAL and raw.parse().output_text == "from B"
    assert streamed == "from D"  # the cut stream on QWEN never reached the client
    assert "response.output_text.delta" in events and "response.failed" in events
    assert fake.attempts == [SCOUT, MISTRAL, QWEN, DEEPSEEK, R1]


def test_responses_all_rate_limited_is_429_with_retry_after(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, provider_429(MISTRAL))

    with start_proxy(chains=PAIR, max_wait=0) as proxy, openai_sdk(proxy) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            client.responses.create(model="pair", input="hi", stream=True)

    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert "rate-limited" in raised.value.message


@pytest.mark.parametrize(
    "stateful",
    [{"store": True}, {"previous_response_id": "resp_123"}],
    ids=["store", "previous_response_id"],
)
def test_stateful_responses_get_openrouters_400_relayed(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, stateful: dict[str, Any]
):
    with start_proxy() as proxy, openai_sdk(proxy) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=SCOUT, input="hi", **stateful)

    said = refused.value.body["message"]  # type: ignore[index]
    assert "stateless" in said or "previous_response_id" in said
    assert len(fake.requests_to(RESPONSES_PATH)) == 1  # relayed, not retried elsewhere


# --- Anthropic Messages ---------------------------------------------------------------------


def test_messages_create_and_stream_with_text_and_a_tool(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, Reply(content="Bonjour"), Reply(content="streamed"))
    fake.script(SCOUT, Reply(content="", tool_call=CALL), Reply(content="", tool_call=CALL))
    hello = [{"role": "user", "content": "hi"}]

    with start_proxy() as proxy, anthropic_sdk(proxy) as client:
        message = client.messages.create(model=SCOUT, max_tokens=64, messages=hello)  # type: ignore[arg-type]
        with client.messages.stream(model=SCOUT, max_tokens=64, messages=hello) as stream:  # type: ignore[arg-type]
            streamed = "".join(stream.text_stream)
        tooled = client.messages.create(
            model=SCOUT,
            max_tokens=64,
            messages=hello,  # type: ignore[arg-type]
            tools=[WEATHER_TOOL_ANTHROPIC],  # type: ignore[list-item]
        )
        with client.messages.stream(
            model=SCOUT,
            max_tokens=64,
            messages=hello,  # type: ignore[arg-type]
            tools=[WEATHER_TOOL_ANTHROPIC],  # type: ignore[list-item]
        ) as stream:
            final = stream.get_final_message()

    assert message.content[0].type == "text" and message.content[0].text == "Bonjour"
    assert streamed == "streamed"
    for answer in (tooled, final):
        (use,) = [block for block in answer.content if block.type == "tool_use"]
        assert use.name == "get_weather" and use.input == {"city": "Paris"}
    sent = fake.requests_to(MESSAGES_PATH)
    assert len(sent) == 4
    assert all(r.headers["authorization"] == f"Bearer {FAKE_KEY}" for r in sent)
    assert all("anthropic-version" in r.headers for r in sent)
    assert all(CLIENT_KEY not in json.dumps(r.headers) for r in sent)


def test_messages_accepts_the_key_as_x_api_key_and_forwards_anthropic_headers(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    with start_proxy() as proxy:
        response = httpx.post(
            f"{proxy.url}/v1/messages",
            headers={
                "x-api-key": CLIENT_KEY,
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "interleaved-thinking-2025-05-14",
            },
            json={"model": SCOUT, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]},
        )

    assert response.status_code == 200, response.text
    (sent,) = fake.requests_to(MESSAGES_PATH)
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "x-api-key" not in sent.headers


def test_messages_fall_back_and_errors_take_anthropics_shape(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, Reply(content="from B"))
    fake.script(QWEN, provider_502())
    fake.script(DEEPSEEK, Reply(content="from B, streamed"))
    fake.script(R1, overloaded_midstream())
    hello = [{"role": "user", "content": "hi"}]

    with start_proxy(chains=CHAINS, max_wait=0) as proxy, anthropic_sdk(proxy) as client:
        raw = client.messages.with_raw_response.create(model="pair", max_tokens=8, messages=hello)  # type: ignore[arg-type]
        with client.messages.stream(model="cut", max_tokens=8, messages=hello) as stream:  # type: ignore[arg-type]
            streamed = "".join(stream.text_stream)
        with pytest.raises(anthropic.APIStatusError) as mid_stream:
            with client.messages.stream(model=R1, max_tokens=8, messages=hello) as stream:  # type: ignore[arg-type]
                "".join(stream.text_stream)

    assert raw.headers["X-Proxy-Model"] == MISTRAL
    assert raw.parse().content[0].text == "from B"  # type: ignore[union-attr]
    assert streamed == "from B, streamed"
    assert mid_stream.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_messages_rate_limited_and_overloaded_errors_parse_in_the_anthropic_sdk(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, provider_429(MISTRAL))
    fake.script(R1, overloaded_529(), overloaded_529())
    hello = [{"role": "user", "content": "hi"}]

    with start_proxy(chains=PAIR, max_wait=0) as proxy, anthropic_sdk(proxy) as client:
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="pair", max_tokens=8, messages=hello)  # type: ignore[arg-type]
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            client.messages.create(model=R1, max_tokens=8, messages=hello)  # type: ignore[arg-type]

    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert overloaded.value.body["type"] == "error"  # type: ignore[index]
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_count_tokens_is_answered_locally_when_openrouter_has_no_such_route(
    start_proxy: ProxyFactory,
):
    with start_proxy() as proxy, anthropic_sdk(proxy) as client:
        counted = client.messages.count_tokens(
            model=SCOUT,
            messages=[{"role": "user", "content": "count these words please " * 40}],
        )

    assert counted.input_tokens > 100


# --- embeddings -----------------------------------------------------------------------------


def test_embeddings_pass_batches_through(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    with start_proxy() as proxy, openai_sdk(proxy) as client:
        result = client.embeddings.create(
            model=EMBED, input=["first", "second"], encoding_format="float"
        )

    assert [d.embedding for d in result.data] == [
        pytest.approx(fake_embedding(EMBED, "first")),
        pytest.approx(fake_embedding(EMBED, "second")),
    ]
    (sent,) = sent_to(fake, EMBEDDINGS_PATH)
    assert sent["input"] == ["first", "second"]


def test_embeddings_never_use_another_models_vectors(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """A rate-limited embedder is waited for within PROXY_MAX_WAIT, or the 429 relayed;
    never answered by another model, even one the client listed."""
    fake.script(EMBED, provider_429(EMBED))

    with start_proxy(max_wait=0) as proxy, openai_sdk(proxy) as client:
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(
                model=EMBED,
                input="x",
                extra_body={"models": ["qwen/qwen3-embedding-4b:free"]},
            )

    assert fake.attempts == [EMBED]


def test_embeddings_wait_for_a_reset_within_max_wait(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    limited = provider_429(EMBED)
    fake.script(EMBED, HttpError(429, limited.body, {"Retry-After": "1"}))

    with start_proxy(max_wait=5) as proxy, openai_sdk(proxy) as client:
        result = client.embeddings.create(model=EMBED, input="x", encoding_format="float")

    assert result.data[0].embedding == pytest.approx(fake_embedding(EMBED, "x"))
    assert fake.attempts == [EMBED, EMBED]


# --- legacy completions ---------------------------------------------------------------------


def test_completions_stream_and_not_with_fallback(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, Reply(content="Once upon"))
    fake.script(QWEN, CutOff())
    fake.script(DEEPSEEK, Reply(content="a time"))
    fake.script(R1, overloaded_midstream())

    with start_proxy(chains=CHAINS, max_wait=0) as proxy, openai_sdk(proxy) as client:
        raw = client.completions.with_raw_response.create(model="pair", prompt="Tell me")
        streamed = "".join(
            chunk.choices[0].text
            for chunk in client.completions.create(model="cut", prompt="Tell", stream=True)
            if chunk.choices
        )
        with pytest.raises(openai.APIError):
            for _ in client.completions.create(model=R1, prompt="Tell", stream=True):
                pass

    assert raw.parse().choices[0].text == "Once upon"
    assert raw.headers["X-Proxy-Model"] == MISTRAL
    assert streamed == "a time"
    assert [body["prompt"] for body in sent_to(fake, COMPLETIONS_PATH)][:1] == ["Tell me"]


def test_completions_all_rate_limited_is_429(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    fake.script(SCOUT, provider_429(SCOUT))
    fake.script(MISTRAL, provider_429(MISTRAL))

    with start_proxy(chains=PAIR, max_wait=0) as proxy, openai_sdk(proxy) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            client.completions.create(model="pair", prompt="x")

    assert int(raised.value.response.headers["retry-after"]) >= 1
