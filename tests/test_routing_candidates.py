"""`Router.candidates`: which models a request may be answered by, in order (DESIGN §6),
against the fake's catalogue served through `httpx.MockTransport`."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import orjson
import pytest

from app.api.chat import CHAT as CHAT_DIALECT
from app.routing.candidates import Router
from app.routing.catalogue import Catalogue
from app.routing.cooldowns import MemoryCooldowns
from app.upstream.client import OpenRouterClient
from app.upstream.httpx_transport import HttpxTransport
from tests.conftest import make_settings
from tests.fake_openrouter import (
    CATALOGUE,
    DEEPSEEK,
    GEMMA,
    MISTRAL,
    OPTIMUS,
    QWEN,
    R1,
    SCOUT,
    SCOUT_PAID,
)

pytestmark = pytest.mark.anyio

GPT = "openai/gpt-4o-mini"
HAIKU = "anthropic/claude-3.5-haiku"
# Every free chat model of the fake catalogue, `:free` or merely zero-priced.
FREE_POOL = {SCOUT, MISTRAL, DEEPSEEK, R1, QWEN, GEMMA, OPTIMUS}
HELLO = [{"role": "user", "content": "hi"}]
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@asynccontextmanager
async def router_for(
    catalogue: list[dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[tuple[Router, MemoryCooldowns]]:
    entries = CATALOGUE if catalogue is None else catalogue

    def models(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/models"
        return httpx.Response(200, json={"data": entries, "links": {"next": None}})

    config = make_settings("http://fake.invalid", **settings)
    upstream = OpenRouterClient(config, HttpxTransport(httpx.MockTransport(models)))
    cooldowns = MemoryCooldowns()
    try:
        yield Router(config, Catalogue(upstream, lambda: 1_800_000_000.0), cooldowns), cooldowns
    finally:
        await upstream.aclose()


async def candidates(
    model: str | None = None,
    chains: dict[str, list[str]] | None = None,
    allow_paid: bool = False,
    catalogue: list[dict[str, Any]] | None = None,
    **body: Any,
) -> list[str]:
    request = {"messages": HELLO, **body, **({"model": model} if model else {})}
    async with router_for(catalogue, chains=chains or {}, allow_paid=allow_paid) as (router, _):
        with anyio.fail_after(2):  # a chain that loops must not hang the router
            return await router.candidates(CHAT_DIALECT.parse(orjson.dumps(request), "free"))


def priced(model_id: str, prompt: str, completion: str) -> dict[str, Any]:
    """A text chat model with the given per-token prices, shaped like the fake's entries."""
    entry = copy.deepcopy(next(m for m in CATALOGUE if m["id"] == GPT))
    entry["id"] = entry["canonical_slug"] = model_id
    entry["architecture"]["input_modalities"] = ["text"]
    entry["pricing"] = {"prompt": prompt, "completion": completion, "request": "0"}
    return entry


# --- names, chains and the `models` array -----------------------------------------------------


async def test_a_model_id_without_a_chain_has_no_fallback():
    assert await candidates(GPT, chains={"fast": [SCOUT]}) == [GPT]
    assert await candidates("acme/not-in-the-catalogue") == ["acme/not-in-the-catalogue"]


async def test_a_chain_keyed_by_an_alias_stands_in_its_place():
    assert await candidates("fast", chains={"fast": [SCOUT, MISTRAL]}) == [SCOUT, MISTRAL]


async def test_a_chain_keyed_by_a_model_id_comes_after_that_model():
    chains = {DEEPSEEK: [R1, GPT]}
    assert await candidates(DEEPSEEK, chains=chains) == [DEEPSEEK, R1, GPT]


async def test_free_inside_a_chain_expands_in_place():
    found = await candidates("fast", chains={"fast": [GPT, "free", HAIKU]})
    assert found[0] == GPT and found[-1] == HAIKU
    assert set(found[1:-1]) == FREE_POOL
    assert len(found) == len(FREE_POOL) + 2


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        pytest.param([MISTRAL, QWEN], [GPT, MISTRAL, QWEN], id="ids"),
        pytest.param(["fast"], [GPT, SCOUT, MISTRAL], id="alias-chain"),
        pytest.param([DEEPSEEK], [GPT, DEEPSEEK, R1], id="model-id-chain"),
    ],
)
async def test_models_entries_are_expanded_like_the_model(models: list[str], expected: list[str]):
    chains = {"fast": [SCOUT, MISTRAL], DEEPSEEK: [R1]}
    assert await candidates(GPT, chains=chains, models=models) == expected


async def test_free_in_the_models_array_adds_the_free_pool():
    found = await candidates(GPT, models=["free"])
    assert found[0] == GPT and set(found[1:]) == FREE_POOL and len(found) == 8


async def test_a_request_without_model_uses_the_default_model():
    assert set(await candidates(None)) == FREE_POOL


@pytest.mark.parametrize(
    ("model", "chains", "models", "expected"),
    [
        pytest.param(SCOUT, {}, [SCOUT, MISTRAL, SCOUT, MISTRAL], [SCOUT, MISTRAL], id="models"),
        pytest.param(
            "fast",
            {"fast": [SCOUT, SCOUT, MISTRAL]},
            [MISTRAL],
            [SCOUT, MISTRAL],
            id="chain-and-models",
        ),
        pytest.param(SCOUT, {SCOUT: [MISTRAL, SCOUT]}, [], [SCOUT, MISTRAL], id="id-chain"),
    ],
)
async def test_duplicates_are_dropped_keeping_the_first(
    model: str, chains: dict[str, list[str]], models: list[str], expected: list[str]
):
    assert await candidates(model, chains=chains, models=models) == expected


async def test_a_chain_naming_a_free_model_and_free_tries_it_once():
    found = await candidates("fast", chains={"fast": [QWEN, "free"]})
    assert found[0] == QWEN and sorted(found) == sorted(FREE_POOL)


@pytest.mark.parametrize(
    ("model", "chains", "expected"),
    [
        pytest.param("loop", {"loop": ["loop", SCOUT]}, [SCOUT], id="alias-names-itself"),
        pytest.param("a", {"a": ["b", SCOUT], "b": ["a", MISTRAL]}, [MISTRAL, SCOUT], id="a-b-a"),
        pytest.param(SCOUT, {SCOUT: [MISTRAL], MISTRAL: [SCOUT]}, [SCOUT, MISTRAL], id="ids"),
    ],
)
async def test_self_referencing_chains_terminate(
    model: str, chains: dict[str, list[str]], expected: list[str]
):
    assert await candidates(model, chains=chains) == expected


# --- the `free` pool --------------------------------------------------------------------------


async def test_free_is_every_free_chat_model_and_no_router_or_image_model():
    found = await candidates("free")
    assert set(found) == FREE_POOL
    assert len(found) == len(FREE_POOL)
    assert OPTIMUS in found  # zero-priced without the `:free` suffix: still free
    for excluded in ("openrouter/free", "openrouter/auto", "google/gemini-2.5-flash-image-preview"):
        assert excluded not in found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"messages": IMAGE}, {MISTRAL, GEMMA}, id="image-input"),
        pytest.param({"tools": TOOLS}, {SCOUT, MISTRAL, QWEN, OPTIMUS}, id="tools"),
        pytest.param({"messages": IMAGE, "tools": TOOLS}, {MISTRAL}, id="image-and-tools"),
        # 100k output tokens rule out Mistral (96k context) and Gemma (8k)
        pytest.param({"max_tokens": 100_000}, FREE_POOL - {MISTRAL, GEMMA}, id="context-length"),
        pytest.param({"tools": []}, FREE_POOL, id="empty-tools-need-nothing"),
    ],
)
async def test_free_keeps_only_models_that_can_take_the_request(
    body: dict[str, Any], expected: set[str]
):
    assert set(await candidates("free", **body)) == expected


async def test_a_model_without_a_known_context_length_is_not_filtered_out():
    catalogue = copy.deepcopy(CATALOGUE)
    for entry in catalogue:
        if entry["id"] == GEMMA:
            entry["context_length"] = None
    assert GEMMA in await candidates("free", catalogue=catalogue, max_tokens=100_000)


async def test_free_puts_proven_models_first_and_failing_ones_last():
    async with router_for() as (router, cooldowns):
        await cooldowns.succeeded(QWEN, 0.2)
        await cooldowns.succeeded(R1, 0.1)
        await cooldowns.mark_failing(SCOUT, time.time() + 15)  # a 5xx just now
        chat = CHAT_DIALECT.parse(orjson.dumps({"model": "free", "messages": HELLO}), "free")
        found = await router.candidates(chat)
    assert found[:2] == [R1, QWEN]
    assert found[-1] == SCOUT


async def test_allow_paid_adds_at_most_three_priced_models_cheapest_first():
    catalogue = [
        *CATALOGUE,
        priced("dear/model", "0.00001", "0.00003"),
        priced("cheap/model", "0.00000001", "0.00000002"),
    ]
    found = await candidates("free", allow_paid=True, catalogue=catalogue)
    assert set(found[: len(FREE_POOL)]) == FREE_POOL
    # the image-output model is priced but not a chat model; `openrouter/auto` is a router
    assert found[len(FREE_POOL) :] == ["cheap/model", SCOUT_PAID, GPT]


async def test_allow_paid_priced_models_must_fit_the_request_too():
    catalogue = [*CATALOGUE, priced("cheap/model", "0.00000001", "0.00000002")]  # text only
    found = await candidates("free", allow_paid=True, catalogue=catalogue, messages=IMAGE)
    assert found[:2] in ([MISTRAL, GEMMA], [GEMMA, MISTRAL])
    assert found[2:] == [SCOUT_PAID, GPT, HAIKU]


async def test_without_allow_paid_only_priced_models_named_by_the_config_appear():
    found = await candidates("fast", chains={"fast": ["free", HAIKU]}, allow_paid=False)
    assert set(found) == FREE_POOL | {HAIKU}
    assert found[-1] == HAIKU
