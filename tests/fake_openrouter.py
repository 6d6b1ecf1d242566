"""A faithful, scenario-driven fake of OpenRouter (see /work/shared/openrouter-api.md).

Tests script per-model behaviours (success, HTTP errors, 200-with-error, drops, stalls) and the
fake reproduces OpenRouter's exact wire shapes, keep-alives and rate limits, so the proxy is
tested against what it will really meet, offline. Serve it with `LiveServer(fake.app)` or
`python -m tests.fake_openrouter --port 8090`; the proxy's base URL is `<url>/api/v1`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import itertools
import json
import logging
import math
import random
import string
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

FAKE_KEY = "sk-or-v1-fake-upstream-key"
FAKE_USER_ID = "user_2yFakeOpenRouterUser0000001"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
TICK = 0.05  # keep-alive period of Stall
_CHAT_PATH = "/api/v1/chat/completions"
RESPONSES_PATH = "/api/v1/responses"
MESSAGES_PATH = "/api/v1/messages"  # no /messages/count_tokens: it 404s like OpenRouter's OAS
COUNT_TOKENS_PATH = "/api/v1/messages/count_tokens"  # served only with `counted_tokens` set
EMBEDDINGS_PATH = "/api/v1/embeddings"
COMPLETIONS_PATH = "/api/v1/completions"
DEFAULT_CONTENT = "Hello from the fake"

# ---------------------------------------------------------------------------------------------
# Catalogue (§1.1)
# ---------------------------------------------------------------------------------------------

_BASE_PARAMS = ["max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty"]
_TOOL_PARAMS = ["tools", "tool_choice", "response_format", "structured_outputs"]
_FREE = {
    "prompt": "0",
    "completion": "0",
    "request": "0",
    "image": "0",
    "web_search": "0",
    "internal_reasoning": "0",
}


def _entry(
    model_id: str,
    name: str,
    context: int | None,
    pricing: dict[str, Any],
    *,
    inputs: tuple[str, ...] = ("text",),
    outputs: tuple[str, ...] = ("text",),
    tools: bool = True,
    reasoning: bool = False,
    tokenizer: str = "Other",
    created: int = 1_740_000_000,
) -> dict[str, Any]:
    """Build one §1.1 Model with every required key, so shape checks in the proxy are real."""
    params = list(_BASE_PARAMS) + (_TOOL_PARAMS if tools else [])
    if reasoning:
        params += ["reasoning", "include_reasoning"]
    if outputs == ("embeddings",):
        params = ["dimensions", "encoding_format", "input_type"]
    return {
        "id": model_id,
        "canonical_slug": model_id.split(":")[0],
        "name": name,
        "created": created,
        "description": f"{name} (fake catalogue entry).",
        "pricing": pricing,
        "context_length": context,
        "architecture": {
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "input_modalities": list(inputs),
            "output_modalities": list(outputs),
            "tokenizer": tokenizer,
            "instruct_type": "deepseek-r1" if reasoning else None,
        },
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": None if context is None else min(context, 16384),
            "is_moderated": model_id.startswith(("openai/", "anthropic/")),
        },
        "per_request_limits": None,
        "supported_parameters": params,
        "default_parameters": {},
        "supported_voices": None,
        "links": {"details": f"/api/v1/models/{model_id}/endpoints"},
    }


# fmt: off
CATALOGUE: list[dict[str, Any]] = [
    _entry("meta-llama/llama-4-scout:free", "Meta: Llama 4 Scout (free)", 131072, dict(_FREE),
           tokenizer="Llama4"),
    _entry("mistralai/mistral-small-3.1-24b-instruct:free",
           "Mistral: Mistral Small 3.1 24B (free)", 96000, dict(_FREE),
           inputs=("text", "image"), tokenizer="Mistral"),
    _entry("deepseek/deepseek-chat-v3-0324:free", "DeepSeek: DeepSeek V3 0324 (free)", 163840,
           dict(_FREE), tools=False, tokenizer="DeepSeek"),
    _entry("deepseek/deepseek-r1:free", "DeepSeek: R1 (free)", 163840, dict(_FREE), tools=False,
           reasoning=True, tokenizer="DeepSeek"),
    _entry("qwen/qwen3-coder:free", "Qwen: Qwen3 Coder 480B A35B (free)", 262144, dict(_FREE),
           tokenizer="Qwen3"),
    _entry("google/gemma-3-27b-it:free", "Google: Gemma 3 27B (free)", 8192, dict(_FREE),
           inputs=("text", "image"), tools=False, tokenizer="Gemini"),
    _entry("openrouter/optimus-alpha", "Optimus Alpha", 1000000, dict(_FREE)),
    _entry("openrouter/free", "Free Models Router", 200000, dict(_FREE), tokenizer="Router"),
    _entry("openrouter/auto", "Auto Router", None, {"prompt": "-1", "completion": "-1"},
           tokenizer="Router"),
    _entry("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", 128000,
           {"prompt": "0.00000015", "completion": "0.0000006", "request": "0",
            "image": "0.000217", "web_search": "0", "internal_reasoning": "0",
            "input_cache_read": "0.000000075", "discount": 0},
           inputs=("text", "image", "file"), tokenizer="GPT"),
    _entry("anthropic/claude-3.5-haiku", "Anthropic: Claude 3.5 Haiku", 200000,
           {"prompt": "0.0000008", "completion": "0.000004", "request": "0", "image": "0",
            "web_search": "0", "internal_reasoning": "0"},
           inputs=("text", "image"), tokenizer="Claude"),
    _entry("meta-llama/llama-4-scout", "Meta: Llama 4 Scout", 327680,
           {"prompt": "0.0000001", "completion": "0.0000003", "request": "0", "image": "0",
            "web_search": "0", "internal_reasoning": "0"},
           inputs=("text", "image"), tokenizer="Llama4"),
    _entry("google/gemini-2.5-flash-image-preview", "Google: Gemini 2.5 Flash Image Preview",
           32768, {"prompt": "0", "completion": "0", "request": "0", "image": "0",
                   "image_output": "0.00003", "web_search": "0", "internal_reasoning": "0"},
           inputs=("image", "text"), outputs=("image", "text"), tools=False,
           tokenizer="Gemini"),
    _entry("openai/text-embedding-3-small", "OpenAI: Text Embedding 3 Small", 8192,
           {"prompt": "0.00000002", "completion": "0", "request": "0", "image": "0",
            "web_search": "0", "internal_reasoning": "0"},
           outputs=("embeddings",), tools=False, tokenizer="GPT"),
    _entry("qwen/qwen3-embedding-4b:free", "Qwen: Qwen3 Embedding 4B (free)", 32768, dict(_FREE),
           outputs=("embeddings",), tools=False, tokenizer="Qwen3"),
]
# fmt: on

_PROVIDERS = {
    "meta-llama": "Groq",
    "mistralai": "Mistral",
    "deepseek": "Chutes",
    "qwen": "Chutes",
    "google": "Google AI Studio",
    "openrouter": "Stealth",
    "openai": "OpenAI",
    "anthropic": "Anthropic",
}

# Model ids of CATALOGUE, named once for every test.
SCOUT = "meta-llama/llama-4-scout:free"
MISTRAL = "mistralai/mistral-small-3.1-24b-instruct:free"  # image input, tools
DEEPSEEK = "deepseek/deepseek-chat-v3-0324:free"
R1 = "deepseek/deepseek-r1:free"
QWEN = "qwen/qwen3-coder:free"
GEMMA = "google/gemma-3-27b-it:free"  # image input, 8k context
OPTIMUS = "openrouter/optimus-alpha"  # zero-priced stealth model, no `:free` suffix
SCOUT_PAID = "meta-llama/llama-4-scout"  # the cheapest priced chat model
EMBED = "openai/text-embedding-3-small"  # priced embedder: output_modalities ["embeddings"]
EMBED_FREE = "qwen/qwen3-embedding-4b:free"  # zero-priced embedder, not in the free chat pool

# ---------------------------------------------------------------------------------------------
# Behaviours
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Success. Stream: keep-alives, role, content chunks, finish, usage(choices []), [DONE].

    Non-stream: `leading_whitespace` bytes first, then `first_byte_delay`, then the §7 JSON
    (`chunk_delay`/`keepalives`/`role_chunk`/`done`/`usage_delay` only shape streams;
    `usage_delay` pauses before the last closing event, on chat and completions the usage
    chunk after the finish, so a client can leave in between). `served_model`
    overrides the answering model, `provider` the provider display name. `tool_call`
    ({"name", "arguments"}) is answered only to a request that sends `tools`; every route
    renders the same fields in its own wire shape.
    """

    content: str = DEFAULT_CONTENT
    chunks: int = 3
    chunk_delay: float = 0.0
    keepalives: int = 1
    leading_whitespace: int = 0
    first_byte_delay: float = 0.0
    done: bool = True
    role_chunk: bool = True
    reasoning: str | None = None
    served_model: str | None = None
    provider: str | None = None
    tool_call: dict[str, Any] | None = None
    usage_delay: float = 0.0


@dataclass(frozen=True)
class HttpError:
    """A failure before the model starts: real status, JSON error body, sent after `delay`."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class ErrorBody200:
    """HTTP 200 whose body (or first SSE event) is `{"error": ..., "user_id": ...}`, no choices."""

    error: dict[str, Any]


def _default_stream_error() -> dict[str, Any]:
    return {
        "code": 429,
        "message": "Rate limit exceeded",
        "metadata": {"error_type": "rate_limit_exceeded"},
    }


@dataclass(frozen=True)
class FinishError200:
    """Provider failed after starting: partial content then finish_reason "error" (§6, §7),
    the error `delay` seconds after the content."""

    after_chunks: int = 1
    done: bool = True
    error: dict[str, Any] = field(default_factory=_default_stream_error)
    content: str = DEFAULT_CONTENT
    chunks: int = 3
    delay: float = 0.0


@dataclass(frozen=True)
class WhitespaceOnly:
    """200 that never carries JSON: whitespace only (stream: keep-alive comments only)."""

    size: int = 8


@dataclass(frozen=True)
class CutOff:
    """200 whose JSON (stream: one data event) ends half way; the body then ends cleanly."""


@dataclass(frozen=True)
class Drop:
    """Abrupt connection reset after `after_chunks` content chunks: no terminator, no [DONE]."""

    after_chunks: int = 1
    content: str = DEFAULT_CONTENT
    chunks: int = 3


@dataclass(frozen=True)
class Stall:
    """Keep-alives every TICK for `seconds` (after `after_chunks` content chunks), then a Reply.

    Streams send `: OPENROUTER PROCESSING` comments, non-streams whitespace, so only a total
    deadline can stop it. When the stall ends the normal success follows (bounded in time).
    """

    seconds: float
    after_chunks: int = 0
    content: str = DEFAULT_CONTENT
    chunks: int = 3


@dataclass(frozen=True)
class EmptyData:
    """Success with nothing in it: /embeddings 200 with `data: []` (§13); elsewhere empty text."""


@dataclass(frozen=True)
class Raw:
    """Exactly these body parts, status and headers: hostile or malformed upstream answers
    (an event `{"choices":5}`, a non-JSON error page, a header value no server should send)."""

    parts: tuple[bytes, ...]
    status: int = 200
    content_type: str = "text/event-stream"
    headers: tuple[tuple[bytes, bytes], ...] = ()


Behaviour = (
    Reply
    | Raw
    | HttpError
    | ErrorBody200
    | FinishError200
    | WhitespaceOnly
    | CutOff
    | Drop
    | Stall
    | EmptyData
)

# ---------------------------------------------------------------------------------------------
# Exact OpenRouter error factories (§4, §5)
# ---------------------------------------------------------------------------------------------


def _err(code: int, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error, "user_id": FAKE_USER_ID}


def _rl_headers(limit: int, reset_ms: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_ms),
    }


def provider_429(model: str) -> HttpError:
    """§5.3 provider-side 429: another model (even a free one) may help; no reset headers."""
    raw = (
        f"{model} is temporarily rate-limited upstream. Please retry shortly, or add your own "
        "key to accumulate your rate limits: https://openrouter.ai/settings/integrations"
    )
    meta = {
        "raw": raw,
        "provider_name": "Venice",
        "is_byok": False,
        "provider_error_code": "engine_overloaded",
        "limit_source": "upstream_provider_shared_pool",
        "remedy_hint": "Retry shortly, add your own provider key at "
        "https://openrouter.ai/settings/integrations, or route to another provider.",
    }
    return HttpError(429, _err(429, "Provider returned error", meta))


def free_per_min(reset_ms: int, limit: int = 20) -> HttpError:
    """§5.2 account-wide free-models-per-min 429 (headers in body and as real headers)."""
    headers = _rl_headers(limit, reset_ms)
    body = _err(
        429,
        "Rate limit exceeded: free-models-per-min. ",
        {"headers": dict(headers), "provider_name": None},
    )
    return HttpError(429, body, headers)


def free_per_day(reset_ms: int, limit: int = 50) -> HttpError:
    """§5.2 account-wide free-models-per-day 429: every `:free` id is out until reset_ms."""
    headers = _rl_headers(limit, reset_ms)
    if limit >= 1000:
        message = "Rate limit exceeded: free-models-per-day-high-balance. "
    else:
        message = (
            "Rate limit exceeded: free-models-per-day. "
            "Add 10 credits to unlock 1000 free model requests per day"
        )
    meta = {
        "headers": dict(headers),
        "limit_source": "openrouter_free_tier_daily",
        "remedy_hint": "Wait for the daily reset (see X-RateLimit-Reset), or purchase credits "
        "to raise your free-model daily limit.",
        "provider_name": None,
    }
    return HttpError(429, _err(429, message, meta), headers)


def per_model_daily(
    model: str, reset_ms: int, provider: str = "Chutes", limit: int = 200
) -> HttpError:
    """§5.4 per-model daily cap: only this model is out; other `:free` models still work."""
    headers = _rl_headers(limit, reset_ms)
    message = (
        f"Rate limit exceeded: limit_rpd/{model}/{uuid.uuid4()}. "
        f"Daily limit reached for {model} via {provider}"
    )
    meta = {
        "headers": dict(headers),
        "limit_source": "openrouter_shared_capacity",
        "provider_name": None,
    }
    return HttpError(429, _err(429, message, meta), headers)


def provider_502(raw: str = "upstream connect error", provider: str = "DeepInfra") -> HttpError:
    """Model down / bad upstream answer: "Provider returned error" with the cause in raw."""
    return HttpError(
        502, _err(502, "Provider returned error", {"raw": raw, "provider_name": provider})
    )


def unavailable_503(retry_after: int) -> HttpError:
    """No provider available right now; Retry-After says when to try again."""
    body = _err(503, "Service temporarily unavailable", {"provider_name": None})
    return HttpError(503, body, {"Retry-After": str(retry_after)})


def no_endpoints(model: str) -> HttpError:
    """Model-specific 404: skip to the next model."""
    return HttpError(404, _err(404, f"No endpoints found for {model}."))


def invalid_model(model: str) -> HttpError:
    """Unknown model id: 400, model-specific."""
    return HttpError(400, _err(400, f"{model} is not a valid model ID"))


def too_many_models() -> HttpError:
    """More than 3 entries in `models`."""
    return HttpError(400, _err(400, "models array must have 3 items or fewer"))


def credits_402() -> HttpError:
    """Account-level: another paid model will not help."""
    message = "Insufficient credits. Add more using https://openrouter.ai/credits"
    meta = {"provider_name": None, "limit_source": "openrouter_credits"}
    return HttpError(402, _err(402, message, meta))


def moderation_403(model: str) -> HttpError:
    """Moderation flag: the same input fails again, so no blind fallback."""
    meta = {
        "reasons": ["violence"],
        "flagged_input": "how do I…ss the castle",
        "provider_name": "OpenAI",
        "model_slug": model,
    }
    message = f'{model} requires moderation on OpenAI. Your input was flagged for "violence".'
    return HttpError(403, _err(403, message, meta))


def bad_request_400(message: str) -> HttpError:
    """Input error: resending the same input cannot help."""
    return HttpError(400, _err(400, message))


def timeout_408() -> HttpError:
    """Request timed out upstream: retry or next model."""
    return HttpError(408, _err(408, "Request timed out"))


def edge_524() -> HttpError:
    """Edge/infra timeout."""
    return HttpError(524, _err(524, "Request timed out. Please try again later."))


def overloaded_529() -> HttpError:
    """Provider overloaded."""
    meta = {"raw": "Overloaded", "provider_name": "Anthropic"}
    return HttpError(529, _err(529, "Provider returned error", meta))


def overloaded_midstream(after_chunks: int = 1) -> FinishError200:
    """The provider overloads after content began: /messages renders `event: error`
    with `overloaded_error` (§12.4), chat/completions a finish_reason "error" chunk."""
    error = {
        "code": 529,
        "message": "Provider is temporarily overloaded",
        "metadata": {"error_type": "provider_overloaded", "provider_name": "Anthropic"},
    }
    return FinishError200(after_chunks=after_chunks, error=error)


def error_200(
    code: int = 429,
    message: str = "Rate limit exceeded: free-models-per-day",
    metadata: dict[str, Any] | None = None,
) -> ErrorBody200:
    """An error that arrives with HTTP 200 (Appendix A 6/7b)."""
    error: dict[str, Any] = {"code": code, "message": message}
    error["metadata"] = metadata if metadata is not None else {"provider_name": None}
    return ErrorBody200(error)


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it; `arrived_at` is time.monotonic() on arrival."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    model: str | None
    request_id: str = ""
    arrived_at: float = 0.0

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and self.json.get("stream") is True


class _Dropped(Exception):
    """Raised mid-body so uvicorn aborts the connection, like a provider socket reset."""


class _QuietDrops(logging.Filter):
    """Hide uvicorn's traceback for deliberate drops; real errors still get logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


_QUIET = _QuietDrops()


class _LiveResponse(StreamingResponse):
    """Writes parts one by one, records when each was sent, and notices client disconnects."""

    def __init__(
        self,
        fake: FakeOpenRouter,
        rid: str,
        status: int,
        headers: dict[str, str],
        parts: AsyncIterator[bytes],
        *,
        eager: bool,
        pre_delay: float = 0.0,
    ) -> None:
        super().__init__(parts, status_code=status, headers=headers)
        self.fake = fake
        self.rid = rid
        self.eager = eager
        self.pre_delay = pre_delay
        self.parts = parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def start() -> None:
            nonlocal started
            if not started:
                started = True
                msg = {"type": "http.response.start", "status": self.status_code}
                await send({**msg, "headers": self.raw_headers})

        async def produce() -> None:
            if self.pre_delay:
                await asyncio.sleep(self.pre_delay)
            if self.eager:
                await start()
            async for part in self.parts:
                await start()
                self.fake._record_sent(self.rid, part)  # before sending: strict ordering proofs
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await start()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.create_task(produce())
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not producer.done():
                producer.cancel()
            watcher.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if producer.cancelled():
            self.fake._record_closed(self.rid)
        elif (exc := producer.exception()) is not None:
            raise exc


# ---------------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------------


def _split(text: str, n: int) -> list[str]:
    n = max(1, n)
    bounds = [round(i * len(text) / n) for i in range(n + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(n)]


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def _ticks(seconds: float, part: bytes) -> AsyncIterator[bytes]:
    end = time.monotonic() + seconds
    while (remaining := end - time.monotonic()) > 0:
        yield part
        await asyncio.sleep(min(TICK, remaining))


@dataclass
class _Gen:
    """Per-response identity shared by every chunk of one generation."""

    id: str
    model: str
    provider: str
    created: int


class FakeOpenRouter:
    """Scenario-driven fake of OpenRouter's /api/v1; see the module docstring."""

    def __init__(self, *, api_key: str = FAKE_KEY, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.clock = clock
        self.models: list[dict[str, Any]] = copy.deepcopy(CATALOGUE)
        self.models_fail = False
        self.requests: list[Received] = []
        self.attempts: list[str] = []  # every model tried, in order, including `models` walks
        self.closed_early: list[str] = []  # request ids whose client left before the end
        self.closed_event = threading.Event()
        self.sent_at: dict[str, list[float]] = {}  # rid -> monotonic time of each data event
        self.sent_parts: dict[str, list[tuple[float, bytes]]] = {}  # rid -> every body write
        self.free_rpm: int | None = None
        self.free_rpd: int | None = None
        self.provider_rpm: dict[str, int] = {}
        self.default_model = "openai/gpt-4o-mini"
        self.report_free_quota = True  # include free_model_daily_requests in /key
        self.counted_tokens: int | None = None  # count_tokens' answer, were OpenRouter to serve it
        self.key_info: dict[str, Any] = {
            "label": f"{api_key[:12]}...{api_key[-3:]}",
            "limit": None,
            "limit_reset": None,
            "limit_remaining": None,
            "include_byok_in_limit": False,
            "usage": 0.0,
            "usage_daily": 0.0,
            "usage_weekly": 0.0,
            "usage_monthly": 0.0,
            "byok_usage": 0.0,
            "byok_usage_daily": 0.0,
            "byok_usage_weekly": 0.0,
            "byok_usage_monthly": 0.0,
            "is_free_tier": True,
            "is_management_key": False,
            "is_provisioning_key": False,
            "creator_user_id": FAKE_USER_ID,
            "expires_at": None,
            "rate_limit": {
                "requests": -1,
                "interval": "10s",
                "note": "This field is deprecated and safe to ignore.",
            },
        }
        self._queues: dict[str, deque[Behaviour]] = {}
        self._defaults: dict[str | None, Behaviour] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._counter = itertools.count(1)
        self._rids: set[str] = set()
        self._rng = random.Random()
        logging.getLogger("uvicorn.error").addFilter(_QUIET)
        self.app = Starlette(
            routes=[
                Route("/api/v1/models", self._models, methods=["GET"]),
                Route("/api/v1/key", self._key, methods=["GET"]),
                Route("/api/v1/auth/key", self._key, methods=["GET"]),
                Route(_CHAT_PATH, self._chat, methods=["POST"]),
                Route(RESPONSES_PATH, self._responses, methods=["POST"]),
                Route(MESSAGES_PATH, self._messages, methods=["POST"]),
                Route(EMBEDDINGS_PATH, self._embeddings, methods=["POST"]),
                Route(COMPLETIONS_PATH, self._completions, methods=["POST"]),
                Route("/{path:path}", self._other, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    # -- scripting ----------------------------------------------------------------------------

    def script(self, model: str, *behaviours: Behaviour) -> None:
        """Queue behaviours for `model`; each attempt on it, on any route, pops one."""
        self._queues.setdefault(model, deque()).extend(behaviours)

    def set_default(self, model: str | None, behaviour: Behaviour) -> None:
        """Behaviour when `model`'s queue is empty (None: every model without its own)."""
        self._defaults[model] = behaviour

    def served_requests(self) -> list[Received]:
        """Every request but GET /key, which a proxy sends on its own at start-up to follow
        the account's free allowance: what a client's request caused."""
        return [r for r in self.requests if r.path not in ("/api/v1/key", "/api/v1/auth/key")]

    def chat_requests(self) -> list[Received]:
        return self.requests_to(_CHAT_PATH)

    def requests_to(self, path: str) -> list[Received]:
        """POSTs to one route, e.g. `fake.requests_to(MESSAGES_PATH)`."""
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    async def wait_closed(self, timeout: float) -> bool:
        """Wait (from any loop) until some client closed a response early."""
        deadline = time.monotonic() + timeout
        while not self.closed_event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.closed_event.is_set()

    # -- bookkeeping --------------------------------------------------------------------------

    def _record_sent(self, rid: str, part: bytes) -> None:
        now = time.monotonic()
        self.sent_parts.setdefault(rid, []).append((now, part))
        if part.startswith(b"data:"):
            self.sent_at.setdefault(rid, []).append(now)

    def _record_closed(self, rid: str) -> None:
        self.closed_early.append(rid)
        self.closed_event.set()

    async def _record(self, request: Request) -> Received:
        arrived = time.monotonic()
        body = await request.body()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        n = next(self._counter)
        rid = request.headers.get("x-request-id") or f"req-{n}"
        if rid in self._rids:
            rid = f"{rid}#{n}"  # retries may reuse the client's id; keep timings apart
        self._rids.add(rid)
        model = parsed.get("model") if isinstance(parsed, dict) else None
        rec = Received(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            model=model if isinstance(model, str) else None,
            request_id=rid,
            arrived_at=arrived,
        )
        self.requests.append(rec)
        return rec

    def _auth_error(self, rec: Received, wire: type[_Wire] | None = None) -> JSONResponse | None:
        wire = wire or _ChatWire
        auth = wire.accepts(rec.headers)
        if not auth.strip():
            body = {"error": {"message": "No auth credentials found", "code": 401}}
            return JSONResponse(wire.error_json(401, body), status_code=401)
        if auth != f"Bearer {self.api_key}":
            return JSONResponse(wire.error_json(401, _err(401, "User not found.")), status_code=401)
        return None

    def _bump(self, key: str, window: int) -> int:
        old_window, count = self._windows.get(key, (window, 0))
        count = count + 1 if old_window == window else 1
        self._windows[key] = (window, count)
        return count

    def _free_used_today(self) -> int:
        window, count = self._windows.get("free-day", (-1, 0))
        return count if window == int(self.clock() // 86400) else 0

    @staticmethod
    def _is_free(model: str) -> bool:
        return model.endswith(":free") or model == "openrouter/free"

    def _limited(self, model: str) -> HttpError | None:
        """Account and provider rate limits; every attempt counts, like OpenRouter."""
        now = self.clock()
        minute, day = int(now // 60), int(now // 86400)
        if self._is_free(model):
            per_day = self._bump("free-day", day)
            per_min = self._bump("free-min", minute)
            if self.free_rpd is not None and per_day > self.free_rpd:
                return free_per_day((day + 1) * 86_400_000, self.free_rpd)
            if self.free_rpm is not None and per_min > self.free_rpm:
                return free_per_min((minute + 1) * 60_000, self.free_rpm)
        if model in self.provider_rpm:
            if self._bump(f"provider:{model}", minute) > self.provider_rpm[model]:
                return provider_429(model)
        return None

    def _behaviour(self, model: str) -> Behaviour:
        queue = self._queues.get(model)
        if queue:
            return queue.popleft()
        if model in self._defaults:
            return self._defaults[model]
        if not self._known(model):
            return invalid_model(model)
        return self._defaults.get(None, Reply())

    # -- routes -------------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        if self.models_fail:
            return JSONResponse(_err(500, "Internal Server Error"), status_code=500)
        data = copy.deepcopy(self.models)
        return JSONResponse({"data": data, "total_count": len(data), "links": {"next": None}})

    async def _key(self, request: Request) -> Response:
        rec = await self._record(request)
        if (denied := self._auth_error(rec)) is not None:
            return denied
        data = copy.deepcopy(self.key_info)
        if self.report_free_quota and "free_model_daily_requests" not in data:
            # Unset, the account bought credits long ago: 1000 a day would still bind a long
            # test run, so the fake reports a large allowance unless a test sets free_rpd.
            limit = self.free_rpd if self.free_rpd is not None else 1_000_000
            used = self._free_used_today()
            data["free_model_daily_requests"] = {
                "limit": limit,
                "remaining": max(0, limit - used),
                "used": used,
            }
        return JSONResponse({"data": data})

    async def _serve(self, request: Request, wire: type[_Wire]) -> Response:
        """Every inference route: auth, `models` walk, limits, scripts; only rendering differs."""
        rec = await self._record(request)
        if (denied := self._auth_error(rec, wire)) is not None:
            return denied
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, wire, bad_request_400("Invalid JSON in request body"), 0.0)
        candidates = wire.candidates(body, rec.model or self.default_model)
        if isinstance(candidates, HttpError):
            return self._error(rec, wire, candidates, 0.0)
        delay = 0.0
        failure: HttpError | None = None
        for model in candidates:
            self.attempts.append(model)
            limited = self._limited(model) if self._known(model) else None
            outcome = limited if limited is not None else self._behaviour(model)
            if isinstance(outcome, HttpError):
                failure = outcome
                delay += outcome.delay
                continue
            return self._render(rec, wire, model, outcome, delay)
        assert failure is not None
        return self._error(rec, wire, failure, delay - failure.delay)

    async def _chat(self, request: Request) -> Response:
        return await self._serve(request, _ChatWire)

    async def _responses(self, request: Request) -> Response:
        return await self._serve(request, _ResponsesWire)

    async def _messages(self, request: Request) -> Response:
        return await self._serve(request, _MessagesWire)

    async def _embeddings(self, request: Request) -> Response:
        return await self._serve(request, _EmbeddingsWire)

    async def _completions(self, request: Request) -> Response:
        return await self._serve(request, _CompletionsWire)

    def _known(self, model: str) -> bool:
        """Catalogued or scripted: anything else is "not a valid model ID", before rate limits."""
        return (
            model in self._queues
            or model in self._defaults
            or any(m.get("id") == model for m in self.models)
        )

    async def _other(self, request: Request) -> Response:
        rec = await self._record(request)
        if rec.path == COUNT_TOKENS_PATH and self.counted_tokens is not None:
            return JSONResponse({"input_tokens": self.counted_tokens})
        return JSONResponse(_err(404, "Not Found"), status_code=404)

    # -- rendering ----------------------------------------------------------------------------

    def _error(
        self, rec: Received, wire: type[_Wire], err: HttpError, pre_delay: float
    ) -> Response:
        payload = _dump(wire.error_json(err.status, err.body))

        async def parts() -> AsyncIterator[bytes]:
            if err.delay:
                await asyncio.sleep(err.delay)
            yield payload

        headers = {"content-type": "application/json", "content-length": str(len(payload))}
        headers.update(err.headers)
        return _LiveResponse(
            self, rec.request_id, err.status, headers, parts(), eager=False, pre_delay=pre_delay
        )

    def _gen(self, model: str, reply: Reply | None = None) -> _Gen:
        served = model
        if reply is not None and reply.served_model:
            served = reply.served_model
        elif model == "openrouter/free":
            frees = [m["id"] for m in self.models if str(m.get("id", "")).endswith(":free")]
            served = frees[0] if frees else "meta-llama/llama-4-scout:free"
        elif model == "openrouter/auto":
            served = "openai/gpt-4o-mini"
        provider = (reply.provider if reply else None) or _PROVIDERS.get(
            served.split("/")[0], "Fake"
        )
        now = int(time.time())
        suffix = "".join(self._rng.choices(string.ascii_letters + string.digits, k=20))
        return _Gen(f"gen-{now}-{suffix}", served, provider, now)

    def _price(self, model: str, key: str) -> float:
        pricing: dict[str, Any] = next(
            (m["pricing"] for m in self.models if m.get("id") == model), {}
        )
        try:
            return max(0.0, float(pricing.get(key, 0)))
        except (TypeError, ValueError):
            return 0.0

    def _usage(self, gen: _Gen, rec: Received, content: str, reasoning: str | None) -> Any:
        """Chat-shaped usage; the other routes rename its fields (see each _Wire)."""
        body = rec.json if isinstance(rec.json, dict) else {}
        messages = body.get("messages")
        prompt = 4 + sum(
            4 + len(str(m.get("content", "")).split())
            for m in (messages if isinstance(messages, list) else [])
            if isinstance(m, dict)
        )
        if not isinstance(messages, list):  # /responses `input`, /completions `prompt`
            prompt += len(str(body.get("input", body.get("prompt", ""))).split())
        reasoning_tokens = len((reasoning or "").split())
        completion = max(1, len(content.split())) + reasoning_tokens
        price_in, price_out = self._price(gen.model, "prompt"), self._price(gen.model, "completion")
        prompt_cost, completion_cost = prompt * price_in, completion * price_out
        cost = prompt_cost + completion_cost
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": cost,
            "is_byok": False,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "cost_details": {
                "upstream_inference_cost": cost,
                "upstream_inference_prompt_cost": prompt_cost,
                "upstream_inference_completions_cost": completion_cost,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "image_tokens": 0,
                "audio_tokens": 0,
            },
        }

    def _render(
        self, rec: Received, wire: type[_Wire], model: str, b: Behaviour, pre_delay: float
    ) -> Response:
        """Turn a non-HttpError behaviour into a 200 response, streamed or not."""
        if isinstance(b, Raw):
            return self._raw(rec, b, pre_delay)
        reply = b if isinstance(b, Reply) else None
        w = wire(self, rec, self._gen(model, reply))
        stream = rec.stream and w.streams
        parts = self._stream_parts(w, b) if stream else self._body_parts(w, b)
        headers = {
            "content-type": "text/event-stream" if stream else "application/json",
            "x-generation-id": w.gen.id,
        }
        if stream:
            headers["cache-control"] = "no-cache"
        if isinstance(b, ErrorBody200) or not w.generation_header:
            del headers["x-generation-id"]
        return _LiveResponse(
            self, rec.request_id, 200, headers, parts, eager=True, pre_delay=pre_delay
        )

    def _raw(self, rec: Received, b: Raw, pre_delay: float) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for part in b.parts:
                yield part

        response = _LiveResponse(
            self,
            rec.request_id,
            b.status,
            {"content-type": b.content_type},
            parts(),
            eager=True,
            pre_delay=pre_delay,
        )
        response.raw_headers.extend(b.headers)  # bytes as given, unchecked
        return response

    async def _stream_parts(self, w: _Wire, b: Behaviour) -> AsyncIterator[bytes]:
        """The order of events every route shares; `w` renders each of them."""
        if isinstance(b, Reply | Stall | EmptyData):
            r = _as_reply(b)
            stall = (b.seconds, b.after_chunks) if isinstance(b, Stall) else None
            for _ in range(r.keepalives):
                yield KEEPALIVE
            if stall and stall[1] <= 0:
                async for part in _ticks(stall[0], KEEPALIVE):
                    yield part
            if r.first_byte_delay:
                await asyncio.sleep(r.first_byte_delay)
            for part in w.opening(r.role_chunk):
                yield part
            if r.reasoning:
                for part in w.reasoning(r.reasoning):
                    yield part
            call = w.tool_call(r)
            if r.content or call is None:
                for part in w.text_open():
                    yield part
                for i, piece in enumerate(_split(r.content, r.chunks)):
                    if i and r.chunk_delay:
                        await asyncio.sleep(r.chunk_delay)
                    yield w.text_delta(piece)
                    if stall and i + 1 == stall[1]:
                        async for part in _ticks(stall[0], KEEPALIVE):
                            yield part
                for part in w.text_close(r.content):
                    yield part
            if call is not None:
                for part in w.tool(call):
                    yield part
            closing = w.closing(r)
            for i, part in enumerate(closing):
                if r.usage_delay and i == len(closing) - 1:
                    await asyncio.sleep(r.usage_delay)
                yield part
            if r.done:
                yield w.done()
        elif isinstance(b, ErrorBody200):
            yield KEEPALIVE
            yield w.early_error(b.error)
        elif isinstance(b, FinishError200 | Drop):
            yield KEEPALIVE
            for part in w.opening(True):
                yield part
            for part in w.text_open():
                yield part
            pieces = _split(b.content, b.chunks)[: b.after_chunks]
            for piece in pieces:
                yield w.text_delta(piece)
            if isinstance(b, Drop):
                raise _Dropped(w.rec.request_id)
            if b.delay:
                await asyncio.sleep(b.delay)
            for part in w.late_error(b.error, "".join(pieces)):
                yield part
            if b.done:
                yield w.done()
        elif isinstance(b, WhitespaceOnly):
            yield KEEPALIVE
            yield KEEPALIVE
        elif isinstance(b, CutOff):
            yield KEEPALIVE
            for part in w.opening(True):
                yield part
            for part in w.text_open():
                yield part
            whole = w.text_delta(DEFAULT_CONTENT)
            yield whole[: len(whole) // 2]

    async def _body_parts(self, w: _Wire, b: Behaviour) -> AsyncIterator[bytes]:
        if isinstance(b, Reply | Stall | EmptyData):
            r = _as_reply(b)
            if r.leading_whitespace:
                yield (b"\n " * r.leading_whitespace)[: r.leading_whitespace]
            if isinstance(b, Stall):
                async for part in _ticks(b.seconds, b"\n"):
                    yield part
            if r.first_byte_delay:
                await asyncio.sleep(r.first_byte_delay)
            yield w.empty() if isinstance(b, EmptyData) else w.whole(r)
        elif isinstance(b, ErrorBody200):
            yield w.error_body(b.error)
        elif isinstance(b, FinishError200):
            yield w.failed_body("".join(_split(b.content, b.chunks)[: b.after_chunks]), b.error)
        elif isinstance(b, WhitespaceOnly):
            yield b"\n" * b.size
        elif isinstance(b, CutOff):
            whole = w.whole(Reply(content=DEFAULT_CONTENT), billed="")
            yield b"\n"
            yield whole[: len(whole) // 2]
        elif isinstance(b, Drop):
            yield b"\n"
            raise _Dropped(w.rec.request_id)


def _as_reply(b: Reply | Stall | EmptyData) -> Reply:
    if isinstance(b, Stall):
        return Reply(content=b.content, chunks=b.chunks)
    if isinstance(b, EmptyData):
        return Reply(content="", chunks=1)
    return b


# ---------------------------------------------------------------------------------------------
# Wires: how each route renders the shared behaviours (§7/§6 chat, §11-§14 the others)
# ---------------------------------------------------------------------------------------------

_ERROR_TYPES = {  # §4.3 canonical error_type by OpenRouter error code
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "invalid_request",
    422: "invalid_request",
    429: "rate_limit_exceeded",
    502: "provider_unavailable",
    503: "provider_unavailable",
    504: "timeout",
    524: "timeout",
    529: "provider_overloaded",
}
_ANTHROPIC_BY_STATUS = {  # §12.4 OAS examples and Anthropic's own table
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    524: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_BY_TYPE = {
    "authentication": "authentication_error",
    "permission_denied": "permission_error",
    "payment_required": "billing_error",
    "not_found": "not_found_error",
    "rate_limit_exceeded": "rate_limit_error",
    "provider_overloaded": "overloaded_error",
    "timeout": "timeout_error",
    "context_length_exceeded": "invalid_request_error",
    "content_policy_violation": "invalid_request_error",
    "invalid_request": "invalid_request_error",
}
MESSAGES_DONE = b"event: data\ndata: [DONE]\n\n"  # OpenRouter's tail after message_stop (§12.3)
EMBEDDING_DIMS = 8  # default vector length; a request's `dimensions` overrides it


def _code(error: dict[str, Any], status: int = 500) -> int:
    code = error.get("code")
    return code if isinstance(code, int) else status


def _error_type(error: dict[str, Any], status: int = 500) -> str:
    """§4.3 canonical `error_type`: metadata's own if given, else derived from the code."""
    meta = error.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("error_type"), str):
        return str(meta["error_type"])
    return _ERROR_TYPES.get(_code(error, status), "server")


def _responses_code(error: dict[str, Any]) -> str:
    """§11.4: the Responses `error.code` is lossy; the precise reason is in `error_type`."""
    kind = _error_type(error)
    if kind == "rate_limit_exceeded":
        return "rate_limit_exceeded"
    if kind in ("context_length_exceeded", "invalid_request"):
        return "invalid_prompt"
    return "server_error"


def _anthropic_error(status: int, body: Any, request_id: str | None = None) -> Any:
    """§12.4 `{"type":"error","error":{type,message,error_type},"request_id"}` from an envelope."""
    if not isinstance(body, dict) or body.get("type") == "error":
        return body  # scripted in the Anthropic shape already
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code, kind = _code(error, status), _error_type(error, status)
    out: dict[str, Any] = {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_BY_STATUS.get(code) or _ANTHROPIC_BY_TYPE.get(kind, "api_error"),
            "message": str(error.get("message", "")),
            "error_type": kind,
        },
        "request_id": request_id,
    }
    if isinstance(error.get("metadata"), dict):
        out["metadata"] = error["metadata"]
    return out


def fake_embedding(model: str, text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """The fake's unit vector for `text` embedded by `model`; float32-exact, so tests can compare.

    Derived from both, so a test can tell which model (after a fallback) produced a vector.
    """
    raw = b"".join(
        hashlib.sha256(f"{model}\n{text}\n{i}".encode()).digest() for i in range(dims // 32 + 1)
    )
    values = [byte / 127.5 - 1.0 for byte in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(array("f", [v / norm for v in values]))


class _Wire:
    """One response's renderer; FakeOpenRouter._stream_parts/_body_parts decide what happens.

    Stream hooks return the bytes of SSE events; body hooks the whole JSON body.
    """

    streams = True
    generation_header = True

    def __init__(self, fake: FakeOpenRouter, rec: Received, gen: _Gen) -> None:
        self.fake, self.rec, self.gen = fake, rec, gen

    @staticmethod
    def error_json(status: int, body: Any) -> Any:
        """The body of an HTTP error on this route, from OpenRouter's ordinary envelope."""
        return body

    @staticmethod
    def candidates(body: dict[str, Any], model: str) -> list[str] | HttpError:
        """The models to try in order: `models` (≤3) or the one `model`."""
        models = body.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            return bad_request_400("models must be an array of strings")
        if models and len(models) > 3:
            return too_many_models()
        return list(models) if models else [model]

    @staticmethod
    def accepts(headers: dict[str, str]) -> str:
        """The credential this route reads, as an Authorization header value."""
        return headers.get("authorization", "")

    def usage(self, content: str, reasoning: str | None) -> Any:
        return self.fake._usage(self.gen, self.rec, content, reasoning)

    def tool_call(self, r: Reply) -> dict[str, Any] | None:
        """Reply.tool_call, answered only when the request offered tools."""
        tools = self.rec.json.get("tools") if isinstance(self.rec.json, dict) else None
        return r.tool_call if tools and r.tool_call else None

    def tmp_id(self, prefix: str, n: int = 11) -> str:
        return prefix + "".join(self.fake._rng.choices(string.ascii_lowercase + string.digits, k=n))

    # stream hooks
    def opening(self, role_chunk: bool) -> list[bytes]:
        return []

    def reasoning(self, text: str) -> list[bytes]:
        return []

    def text_open(self) -> list[bytes]:
        return []

    def text_delta(self, piece: str) -> bytes:
        raise NotImplementedError

    def text_close(self, text: str) -> list[bytes]:
        return []

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        return []

    def closing(self, r: Reply) -> list[bytes]:
        return []

    def done(self) -> bytes:
        return DONE

    def early_error(self, error: dict[str, Any]) -> bytes:
        """An error before any content, in-band on a committed 200 (§6)."""
        return _sse({"error": error, "user_id": FAKE_USER_ID})

    def late_error(self, error: dict[str, Any], partial: str) -> list[bytes]:
        raise NotImplementedError

    # body hooks
    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        """The success body; `billed` replaces the content counted in usage."""
        raise NotImplementedError

    def empty(self) -> bytes:
        return self.whole(Reply(content=""))

    def error_body(self, error: dict[str, Any]) -> bytes:
        return _dump({"error": error, "user_id": FAKE_USER_ID})

    def failed_body(self, partial: str, error: dict[str, Any]) -> bytes:
        return self.error_body(error)


class _ChatWire(_Wire):
    """POST /chat/completions (§6, §7)."""

    ROLE = {"role": "assistant", "content": ""}

    def chunk(
        self, delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
    ) -> bytes:
        gen = self.gen
        choices: list[dict[str, Any]] = []
        if delta is not None:
            choices.append(
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish,
                    "native_finish_reason": finish,
                    "logprobs": None,
                }
            )
        obj = {
            "id": gen.id,
            "provider": gen.provider,
            "model": gen.model,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "choices": choices,
            "system_fingerprint": None,
            **extra,
        }
        return _sse(obj)

    def opening(self, role_chunk: bool) -> list[bytes]:
        return [self.chunk(self.ROLE)] if role_chunk else []

    def reasoning(self, text: str) -> list[bytes]:
        return [self.chunk({**self.ROLE, "reasoning": text})]

    def text_delta(self, piece: str) -> bytes:
        return self.chunk({"role": "assistant", "content": piece})

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        head = {"index": 0, "id": self.tmp_id("call_", 24), "type": "function"}
        first = {**head, "function": {"name": call["name"], "arguments": ""}}
        parts = [self.chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
        for piece in _split(str(call.get("arguments", "")), 2):
            more = {"index": 0, "function": {"arguments": piece}}
            parts.append(self.chunk({"role": "assistant", "tool_calls": [more]}))
        return parts

    def closing(self, r: Reply) -> list[bytes]:
        finish = "stop" if self.tool_call(r) is None else "tool_calls"
        usage = self.usage(r.content, r.reasoning)
        return [self.chunk({}, finish), self.chunk(None, usage=usage)]

    def late_error(self, error: dict[str, Any], partial: str) -> list[bytes]:
        gen = self.gen
        obj = {
            "id": gen.id,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "model": gen.model,
            "provider": gen.provider,
            "error": error,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
        return [_sse(obj)]

    def completion(
        self,
        content: str,
        reasoning: str | None,
        usage: Any,
        finish: str = "stop",
        error: dict[str, Any] | None = None,
        call: dict[str, Any] | None = None,
    ) -> bytes:
        gen = self.gen
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "reasoning": reasoning,
        }
        if call is not None:
            function = {"name": call["name"], "arguments": str(call.get("arguments", ""))}
            tool = {"id": self.tmp_id("call_", 24), "type": "function", "function": function}
            message["tool_calls"] = [tool]
        choice: dict[str, Any] = {
            "index": 0,
            "logprobs": None,
            "finish_reason": finish,
            "native_finish_reason": finish,
            "message": message,
        }
        if error is not None:
            choice["error"] = error
        return _dump(
            {
                "id": gen.id,
                "object": "chat.completion",
                "created": gen.created,
                "model": gen.model,
                "provider": gen.provider,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": usage,
            }
        )

    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        usage = self.usage(r.content if billed is None else billed, r.reasoning)
        call = self.tool_call(r)
        finish = "stop" if call is None else "tool_calls"
        return self.completion(r.content, r.reasoning, usage, finish, call=call)

    def failed_body(self, partial: str, error: dict[str, Any]) -> bytes:
        return self.completion(partial, None, self.usage(partial, None), "error", error)


class _CompletionsWire(_Wire):
    """POST /completions (§14): chat's framing with `text` choices, object "text_completion"."""

    def chunk(self, choice: dict[str, Any] | None, **extra: Any) -> bytes:
        gen = self.gen
        choices = [] if choice is None else [choice]
        obj = {
            "id": gen.id,
            "provider": gen.provider,
            "model": gen.model,
            "object": "text_completion",
            "created": gen.created,
            "choices": choices,
            "system_fingerprint": None,
            **extra,
        }
        return _sse(obj)

    @staticmethod
    def choice(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "text": text,
            "index": 0,
            "finish_reason": finish,
            "native_finish_reason": finish,
            "logprobs": None,
            **extra,
        }

    def reasoning(self, text: str) -> list[bytes]:
        return [self.chunk(self.choice("", reasoning=text))]

    def text_delta(self, piece: str) -> bytes:
        return self.chunk(self.choice(piece))

    def closing(self, r: Reply) -> list[bytes]:
        usage = self.usage(r.content, r.reasoning)
        return [self.chunk(self.choice("", "stop")), self.chunk(None, usage=usage)]

    def late_error(self, error: dict[str, Any], partial: str) -> list[bytes]:
        return [self.chunk({"text": "", "index": 0, "finish_reason": "error"}, error=error)]

    def body(self, choice: dict[str, Any], usage: Any) -> bytes:
        gen = self.gen
        return _dump(
            {
                "id": gen.id,
                "object": "text_completion",
                "created": gen.created,
                "model": gen.model,
                "provider": gen.provider,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": usage,
            }
        )

    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        usage = self.usage(r.content if billed is None else billed, r.reasoning)
        return self.body(self.choice(r.content, "stop", reasoning=r.reasoning), usage)

    def failed_body(self, partial: str, error: dict[str, Any]) -> bytes:
        return self.body(self.choice(partial, "error", error=error), self.usage(partial, None))


class _ResponsesWire(_Wire):
    """POST /responses (§11): data-only events with `type` and `sequence_number` from 0."""

    def __init__(self, fake: FakeOpenRouter, rec: Received, gen: _Gen) -> None:
        super().__init__(fake, rec, gen)
        self.seq = itertools.count()
        self.output: list[dict[str, Any]] = []  # finished items, for the terminal event
        self.msg_id = ""

    def event(self, kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, **fields, "sequence_number": next(self.seq)})

    @staticmethod
    def candidates(body: dict[str, Any], model: str) -> list[str] | HttpError:
        """Stateless like OpenRouter (§11.1): `store: true` or a `previous_response_id` is a
        400 before any model is tried."""
        if body.get("store") is True:
            return bad_request_400("store must be false: this API is stateless")
        if body.get("previous_response_id") is not None:
            return bad_request_400(
                "previous_response_id is not supported: send the whole conversation in input"
            )
        return _Wire.candidates(body, model)

    def response(
        self, status: str, usage: Any = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = self.rec.json if isinstance(self.rec.json, dict) else {}
        tools = body.get("tools")
        out: dict[str, Any] = {
            "object": "response",
            "id": self.gen.id,
            "created_at": self.gen.created,
            "model": self.gen.model,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "output": list(self.output),
            "usage": usage,
            "tools": tools if isinstance(tools, list) else [],
            "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": True,
            "temperature": None,
            "top_p": None,
            "store": False,
            "service_tier": "auto",
            "previous_response_id": None,
        }
        if error is not None:
            out["error"] = {"code": _responses_code(error), "message": error.get("message", "")}
            out["error_type"] = _error_type(error)
        return out

    def usage_of(self, content: str, reasoning: str | None) -> dict[str, Any]:
        chat = self.usage(content, reasoning)
        return {
            "input_tokens": chat["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": chat["completion_tokens"],
            "output_tokens_details": {
                "reasoning_tokens": chat["completion_tokens_details"]["reasoning_tokens"]
            },
            "total_tokens": chat["total_tokens"],
            "cost": chat["cost"],
            "is_byok": False,
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_input_cost": chat["cost_details"][
                    "upstream_inference_prompt_cost"
                ],
                "upstream_inference_output_cost": chat["cost_details"][
                    "upstream_inference_completions_cost"
                ],
            },
        }

    @staticmethod
    def message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": []}
        return {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": status,
            "content": [part],
        }

    def reasoning_item(self, text: str) -> dict[str, Any]:
        part = {"type": "reasoning_text", "text": text}
        return {
            "type": "reasoning",
            "id": self.tmp_id("rs_tmp_"),
            "summary": [],
            "content": [part],
            "status": "completed",
        }

    def call_item(self, call: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": self.tmp_id("fc_tmp_"),
            "call_id": self.tmp_id("call_", 24),
            "name": call["name"],
            "arguments": str(call.get("arguments", "")),
            "status": "completed",
        }

    def opening(self, role_chunk: bool) -> list[bytes]:
        return [
            self.event("response.created", response=self.response("in_progress")),
            self.event("response.in_progress", response=self.response("in_progress")),
        ]

    def reasoning(self, text: str) -> list[bytes]:
        item = self.reasoning_item(text)
        at = {"item_id": item["id"], "output_index": len(self.output), "content_index": 0}
        parts = [
            self.event(
                "response.output_item.added",
                output_index=len(self.output),
                item={**item, "content": [], "status": "in_progress"},
            ),
            self.event(
                "response.content_part.added", **at, part={**item["content"][0], "text": ""}
            ),
        ]
        for piece in _split(text, 2):
            parts.append(self.event("response.reasoning_text.delta", **at, delta=piece))
        parts += [
            self.event("response.reasoning_text.done", **at, text=text),
            self.event("response.content_part.done", **at, part=item["content"][0]),
            self.event("response.output_item.done", output_index=len(self.output), item=item),
        ]
        self.output.append(item)
        return parts

    def at(self) -> dict[str, Any]:
        return {"item_id": self.msg_id, "output_index": len(self.output), "content_index": 0}

    def text_open(self) -> list[bytes]:
        self.msg_id = self.tmp_id("msg_tmp_")
        item = {**self.message(self.msg_id, ""), "status": "in_progress", "content": []}
        empty = {"type": "output_text", "annotations": [], "text": ""}
        return [
            self.event("response.output_item.added", output_index=len(self.output), item=item),
            self.event("response.content_part.added", **self.at(), part=empty),
        ]

    def text_delta(self, piece: str) -> bytes:
        return self.event("response.output_text.delta", logprobs=[], **self.at(), delta=piece)

    def text_close(self, text: str) -> list[bytes]:
        item = self.message(self.msg_id, text)
        parts = [
            self.event("response.output_text.done", **self.at(), text=text, logprobs=[]),
            self.event("response.content_part.done", **self.at(), part=item["content"][0]),
            self.event("response.output_item.done", output_index=len(self.output), item=item),
        ]
        self.output.append(item)
        return parts

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        item = self.call_item(call)
        index = len(self.output)
        at = {"item_id": item["id"], "output_index": index}
        added = {**item, "arguments": "", "status": "in_progress"}
        parts = [self.event("response.output_item.added", output_index=index, item=added)]
        for piece in _split(item["arguments"], 2):
            parts.append(self.event("response.function_call_arguments.delta", **at, delta=piece))
        parts += [
            self.event(
                "response.function_call_arguments.done",
                **at,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]
        self.output.append(item)
        return parts

    def closing(self, r: Reply) -> list[bytes]:
        usage = self.usage_of(r.content, r.reasoning)
        return [self.event("response.completed", response=self.response("completed", usage))]

    def early_error(self, error: dict[str, Any]) -> bytes:
        """§11.4's `{"type":"error","error":{...}}`: the shape openai-python raises on."""
        body = {"code": _responses_code(error), "message": error.get("message", "")}
        return self.event("error", error=body)

    def late_error(self, error: dict[str, Any], partial: str) -> list[bytes]:
        self.output.append(self.message(self.msg_id, partial, "incomplete"))
        failed = self.response("failed", error=error)
        return [self.event("response.failed", response=failed)]

    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        if r.reasoning:
            self.output.append(self.reasoning_item(r.reasoning))
        call = self.tool_call(r)
        if r.content or call is None:
            self.output.append(self.message(self.tmp_id("msg_tmp_"), r.content))
        if call is not None:
            self.output.append(self.call_item(call))
        usage = self.usage_of(r.content if billed is None else billed, r.reasoning)
        return _dump(self.response("completed", usage))

    def error_body(self, error: dict[str, Any]) -> bytes:
        return _dump(self.response("failed", error=error))

    def failed_body(self, partial: str, error: dict[str, Any]) -> bytes:
        self.output.append(self.message(self.tmp_id("msg_tmp_"), partial, "incomplete"))
        return _dump(self.response("failed", self.usage_of(partial, None), error))


class _MessagesWire(_Wire):
    """POST /messages (§12): named events, Anthropic error bodies, `event: data` [DONE] tail."""

    def __init__(self, fake: FakeOpenRouter, rec: Received, gen: _Gen) -> None:
        super().__init__(fake, rec, gen)
        self.index = -1
        self.pinged = False

    @staticmethod
    def error_json(status: int, body: Any) -> Any:
        return _anthropic_error(status, body)

    @staticmethod
    def candidates(body: dict[str, Any], model: str) -> list[str] | HttpError:
        """`fallbacks: [{"model"}]` (≤3, nothing else in an entry, not with `models`), §12.1."""
        fallbacks = body.get("fallbacks")
        if fallbacks is None:
            return _Wire.candidates(body, model)
        if "models" in body:
            return bad_request_400("fallbacks and models cannot be used together")
        if not isinstance(fallbacks, list) or not all(
            isinstance(f, dict) and set(f) == {"model"} and isinstance(f["model"], str)
            for f in fallbacks
        ):
            return bad_request_400("fallbacks entries may only contain a model")
        if len(fallbacks) > 3:
            return bad_request_400("fallbacks array must have 3 items or fewer")
        return [model, *(f["model"] for f in fallbacks)]

    @staticmethod
    def accepts(headers: dict[str, str]) -> str:
        """Bearer or Anthropic's `x-api-key` (what the anthropic SDK sends), §12.1."""
        if not headers.get("authorization", "").strip() and headers.get("x-api-key"):
            return f"Bearer {headers['x-api-key']}"
        return headers.get("authorization", "")

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = json.dumps({"type": kind, **fields}, separators=(",", ":"))
        return f"event: {kind}\ndata: {payload}\n\n".encode()

    def usage_of(self, content: str, reasoning: str | None, streamed: bool) -> dict[str, Any]:
        chat = self.usage(content, reasoning)
        usage: dict[str, Any] = {
            "input_tokens": chat["prompt_tokens"],
            "output_tokens": chat["completion_tokens"],
            "output_tokens_details": None,
            "cache_creation_input_tokens": None if streamed else 0,
            "cache_read_input_tokens": None if streamed else 0,
            "cache_creation": None,
            "server_tool_use": None,
            "service_tier": None if streamed else "standard",
            "speed": "standard",
            "cost": chat["cost"],
            "is_byok": False,
            "cost_details": chat["cost_details"],
        }
        thinking = chat["completion_tokens_details"]["reasoning_tokens"]
        if thinking:
            usage["output_tokens_details"] = {"thinking_tokens": thinking}
        return usage

    def block(self, content_block: dict[str, Any]) -> list[bytes]:
        self.index += 1
        parts = [self.event("content_block_start", index=self.index, content_block=content_block)]
        if not self.pinged:
            self.pinged = True
            parts.append(self.event("ping"))
        return parts

    def delta(self, delta: dict[str, Any]) -> bytes:
        return self.event("content_block_delta", index=self.index, delta=delta)

    def opening(self, role_chunk: bool) -> list[bytes]:
        zero = {
            "input_tokens": 0,
            "output_tokens": 0,
            "output_tokens_details": None,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation": None,
            "inference_geo": None,
            "server_tool_use": None,
            "service_tier": None,
            "speed": "standard",
        }
        message = {**self.message([], None, zero), "provider": self.gen.provider}
        return [self.event("message_start", message=message)]

    def reasoning(self, text: str) -> list[bytes]:
        parts = self.block({"type": "thinking", "thinking": "", "signature": ""})
        for piece in _split(text, 2):
            parts.append(self.delta({"type": "thinking_delta", "thinking": piece}))
        return [*parts, self.event("content_block_stop", index=self.index)]

    def text_open(self) -> list[bytes]:
        return self.block({"type": "text", "text": ""})

    def text_delta(self, piece: str) -> bytes:
        return self.delta({"type": "text_delta", "text": piece})

    def text_close(self, text: str) -> list[bytes]:
        return [self.event("content_block_stop", index=self.index)]

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        block = {
            "type": "tool_use",
            "id": self.tmp_id("toolu_", 24),
            "name": call["name"],
            "input": {},
        }
        parts = self.block(block)
        for piece in _split(str(call.get("arguments", "")), 2):
            parts.append(self.delta({"type": "input_json_delta", "partial_json": piece}))
        return [*parts, self.event("content_block_stop", index=self.index)]

    def closing(self, r: Reply) -> list[bytes]:
        stop = "end_turn" if self.tool_call(r) is None else "tool_use"
        delta = {
            "container": None,
            "stop_details": None,
            "stop_reason": stop,
            "stop_sequence": None,
        }
        usage = self.usage_of(r.content, r.reasoning, streamed=True)
        return [
            self.event("message_delta", delta=delta, usage=usage, context_management=None),
            self.event("message_stop"),
        ]

    def done(self) -> bytes:
        return MESSAGES_DONE

    def in_band(self, error: dict[str, Any]) -> dict[str, Any]:
        return dict(_anthropic_error(_code(error), {"error": error}, self.gen.id)["error"])

    def early_error(self, error: dict[str, Any]) -> bytes:
        return self.event("error", error=self.in_band(error))

    def late_error(self, error: dict[str, Any], partial: str) -> list[bytes]:
        return [self.event("error", error=self.in_band(error))]

    def message(self, content: list[Any], stop: str | None, usage: Any) -> dict[str, Any]:
        return {
            "id": self.gen.id,
            "type": "message",
            "role": "assistant",
            "container": None,
            "content": content,
            "model": self.gen.model,
            "stop_reason": stop,
            "stop_details": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        content: list[dict[str, Any]] = []
        if r.reasoning:
            content.append({"type": "thinking", "thinking": r.reasoning, "signature": ""})
        call = self.tool_call(r)
        if r.content or call is None:
            content.append({"type": "text", "text": r.content, "citations": None})
        if call is not None:
            arguments = json.loads(str(call.get("arguments") or "{}"))
            content.append(
                {
                    "type": "tool_use",
                    "id": self.tmp_id("toolu_", 24),
                    "name": call["name"],
                    "input": arguments,
                }
            )
        usage = self.usage_of(r.content if billed is None else billed, r.reasoning, False)
        stop = "end_turn" if call is None else "tool_use"
        return _dump({**self.message(content, stop, usage), "provider": self.gen.provider})

    def error_body(self, error: dict[str, Any]) -> bytes:
        return _dump(_anthropic_error(_code(error), {"error": error}, self.gen.id))


class _EmbeddingsWire(_Wire):
    """POST /embeddings (§13): one JSON body, never a stream, no X-Generation-Id."""

    streams = False
    generation_header = False

    @staticmethod
    def candidates(body: dict[str, Any], model: str) -> list[str] | HttpError:
        return [model]  # the OAS has no `models` here

    def inputs(self) -> list[str]:
        """Each input item as text: a string, or the JSON of token ids / multimodal parts."""
        raw = self.rec.json.get("input") if isinstance(self.rec.json, dict) else None
        if isinstance(raw, str):
            return [raw]
        if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            return [json.dumps(raw)]  # one token-id array
        items = raw if isinstance(raw, list) else []
        return [x if isinstance(x, str) else json.dumps(x, sort_keys=True) for x in items]

    def body(self, data: list[dict[str, Any]], tokens: int) -> bytes:
        cost = tokens * self.fake._price(self.gen.model, "prompt")
        usage = {
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "cost": cost,
            "is_byok": False,
            "cost_details": {"upstream_inference_cost": cost},
        }
        obj = {
            "id": self.gen.id.replace("gen-", "embd-", 1),
            "object": "list",
            "data": data,
            "model": self.gen.model,
            "usage": usage,
        }
        return _dump(obj)

    def whole(self, r: Reply, billed: str | None = None) -> bytes:
        body = self.rec.json if isinstance(self.rec.json, dict) else {}
        dims = body.get("dimensions")
        dims = dims if isinstance(dims, int) and dims > 0 else EMBEDDING_DIMS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts := self.inputs()):
            vector = fake_embedding(self.gen.model, text, dims)
            value: Any = vector
            if as_base64:
                value = base64.b64encode(array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "embedding": value, "index": i})
        return self.body(data, sum(max(1, len(t.split())) for t in texts))

    def empty(self) -> bytes:
        return self.body([], 0)


def main(argv: list[str] | None = None) -> None:
    """Serve the fake by hand, e.g. to point a locally running proxy at it."""
    parser = argparse.ArgumentParser(description="Fake OpenRouter (offline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default=FAKE_KEY)
    parser.add_argument("--free-rpm", type=int, default=None)
    parser.add_argument("--free-rpd", type=int, default=None)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args(argv)
    fake = FakeOpenRouter(api_key=args.api_key)
    fake.free_rpm, fake.free_rpd = args.free_rpm, args.free_rpd
    if args.chunk_delay:
        fake.set_default(None, Reply(chunk_delay=args.chunk_delay))
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
