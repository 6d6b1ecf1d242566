"""A faithful, scenario-driven fake of OpenRouter (see /work/shared/openrouter-api.md).

Tests script per-model behaviours (success, HTTP errors, 200-with-error, drops, stalls) and the
fake reproduces OpenRouter's exact wire shapes, keep-alives and rate limits, so the proxy is
tested against what it will really meet, offline. Serve it with `LiveServer(fake.app)` or
`python -m tests.fake_openrouter --port 8090`; the proxy's base URL is `<url>/api/v1`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import logging
import random
import string
import threading
import time
import uuid
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

# ---------------------------------------------------------------------------------------------
# Behaviours
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Success. Stream: keep-alives, role, content chunks, finish, usage(choices []), [DONE].

    Non-stream: `leading_whitespace` bytes first, then `first_byte_delay`, then the §7 JSON
    (`chunk_delay`/`keepalives`/`role_chunk`/`done` only shape streams). `served_model`
    overrides the answering model, `provider` the provider display name.
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
    """Provider failed after starting: partial content then finish_reason "error" (§6, §7)."""

    after_chunks: int = 1
    done: bool = True
    error: dict[str, Any] = field(default_factory=_default_stream_error)
    content: str = DEFAULT_CONTENT
    chunks: int = 3


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
class Raw:
    """Exactly these body parts, status and headers: hostile or malformed upstream answers
    (an event `{"choices":5}`, a non-JSON error page, a header value no server should send)."""

    parts: tuple[bytes, ...]
    status: int = 200
    content_type: str = "text/event-stream"
    headers: tuple[tuple[bytes, bytes], ...] = ()


Behaviour = (
    Reply | HttpError | ErrorBody200 | FinishError200 | WhitespaceOnly | CutOff | Drop | Stall | Raw
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
                Route("/{path:path}", self._other, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    # -- scripting ----------------------------------------------------------------------------

    def script(self, model: str, *behaviours: Behaviour) -> None:
        """Queue behaviours for `model`; each chat attempt on it pops one."""
        self._queues.setdefault(model, deque()).extend(behaviours)

    def set_default(self, model: str | None, behaviour: Behaviour) -> None:
        """Behaviour when `model`'s queue is empty (None: every model without its own)."""
        self._defaults[model] = behaviour

    def chat_requests(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST" and r.path == _CHAT_PATH]

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

    def _auth_error(self, rec: Received) -> JSONResponse | None:
        auth = rec.headers.get("authorization", "")
        if not auth.strip():
            body = {"error": {"message": "No auth credentials found", "code": 401}}
            return JSONResponse(body, status_code=401)
        if auth != f"Bearer {self.api_key}":
            return JSONResponse(_err(401, "User not found."), status_code=401)
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
            limit = self.free_rpd if self.free_rpd is not None else 50
            used = self._free_used_today()
            data["free_model_daily_requests"] = {
                "limit": limit,
                "remaining": max(0, limit - used),
                "used": used,
            }
        return JSONResponse({"data": data})

    async def _chat(self, request: Request) -> Response:
        rec = await self._record(request)
        if (denied := self._auth_error(rec)) is not None:
            return denied
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, bad_request_400("Invalid JSON in request body"), 0.0)
        models = body.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            return self._error(rec, bad_request_400("models must be an array of strings"), 0.0)
        if models and len(models) > 3:
            return self._error(rec, too_many_models(), 0.0)
        candidates: list[str] = models or [rec.model or self.default_model]
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
            return self._render(rec, model, outcome, delay)
        assert failure is not None
        return self._error(rec, failure, delay - failure.delay)

    def _known(self, model: str) -> bool:
        """Catalogued or scripted: anything else is "not a valid model ID", before rate limits."""
        return (
            model in self._queues
            or model in self._defaults
            or any(m.get("id") == model for m in self.models)
        )

    async def _other(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse(_err(404, "Not Found"), status_code=404)

    # -- rendering ----------------------------------------------------------------------------

    def _error(self, rec: Received, err: HttpError, pre_delay: float) -> Response:
        payload = _dump(err.body)

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

    def _usage(self, gen: _Gen, rec: Received, content: str, reasoning: str | None) -> Any:
        messages = rec.json.get("messages") if isinstance(rec.json, dict) else None
        prompt = 4 + sum(
            4 + len(str(m.get("content", "")).split())
            for m in (messages if isinstance(messages, list) else [])
            if isinstance(m, dict)
        )
        reasoning_tokens = len((reasoning or "").split())
        completion = max(1, len(content.split())) + reasoning_tokens
        pricing: dict[str, Any] = next(
            (m["pricing"] for m in self.models if m.get("id") == gen.model), {}
        )

        def price(key: str) -> float:
            try:
                return max(0.0, float(pricing.get(key, 0)))
            except (TypeError, ValueError):
                return 0.0

        prompt_cost, completion_cost = prompt * price("prompt"), completion * price("completion")
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

    @staticmethod
    def _chunk(
        gen: _Gen,
        delta: dict[str, Any] | None = None,
        finish: str | None = None,
        **extra: Any,
    ) -> bytes:
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

    @staticmethod
    def _completion(
        gen: _Gen,
        content: str,
        reasoning: str | None,
        usage: Any,
        finish: str = "stop",
        error: dict[str, Any] | None = None,
    ) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "logprobs": None,
            "finish_reason": finish,
            "native_finish_reason": finish,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "reasoning": reasoning,
            },
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

    def _render(self, rec: Received, model: str, b: Behaviour, pre_delay: float) -> Response:
        """Turn a non-HttpError behaviour into a 200 response, streamed or not."""
        if isinstance(b, Raw):
            return self._raw(rec, b, pre_delay)
        reply = b if isinstance(b, Reply) else None
        gen = self._gen(model, reply)
        stream = rec.stream
        parts = self._stream_parts(rec, gen, b) if stream else self._body_parts(rec, gen, b)
        headers = {
            "content-type": "text/event-stream" if stream else "application/json",
            "x-generation-id": gen.id,
        }
        if stream:
            headers["cache-control"] = "no-cache"
        if isinstance(b, ErrorBody200):
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

    async def _stream_parts(self, rec: Received, gen: _Gen, b: Behaviour) -> AsyncIterator[bytes]:
        role = {"role": "assistant", "content": ""}
        if isinstance(b, Reply | Stall):
            r = b if isinstance(b, Reply) else Reply(content=b.content, chunks=b.chunks)
            stall = (b.seconds, b.after_chunks) if isinstance(b, Stall) else None
            for _ in range(r.keepalives):
                yield KEEPALIVE
            if stall and stall[1] <= 0:
                async for part in _ticks(stall[0], KEEPALIVE):
                    yield part
            if r.first_byte_delay:
                await asyncio.sleep(r.first_byte_delay)
            if r.role_chunk:
                yield self._chunk(gen, role)
            if r.reasoning:
                yield self._chunk(gen, {**role, "reasoning": r.reasoning})
            for i, piece in enumerate(_split(r.content, r.chunks)):
                if i and r.chunk_delay:
                    await asyncio.sleep(r.chunk_delay)
                yield self._chunk(gen, {"role": "assistant", "content": piece})
                if stall and i + 1 == stall[1]:
                    async for part in _ticks(stall[0], KEEPALIVE):
                        yield part
            yield self._chunk(gen, {}, "stop")
            usage = self._usage(gen, rec, r.content, r.reasoning)
            yield self._chunk(gen, None, usage=usage)
            if r.done:
                yield DONE
        elif isinstance(b, ErrorBody200):
            yield KEEPALIVE
            yield _sse({"error": b.error, "user_id": FAKE_USER_ID})
        elif isinstance(b, FinishError200 | Drop):
            yield KEEPALIVE
            yield self._chunk(gen, role)
            for piece in _split(b.content, b.chunks)[: b.after_chunks]:
                yield self._chunk(gen, {"role": "assistant", "content": piece})
            if isinstance(b, Drop):
                raise _Dropped(rec.request_id)
            yield _sse(
                {
                    "id": gen.id,
                    "object": "chat.completion.chunk",
                    "created": gen.created,
                    "model": gen.model,
                    "provider": gen.provider,
                    "error": b.error,
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                }
            )
            if b.done:
                yield DONE
        elif isinstance(b, WhitespaceOnly):
            yield KEEPALIVE
            yield KEEPALIVE
        elif isinstance(b, CutOff):
            yield KEEPALIVE
            yield self._chunk(gen, role)
            whole = self._chunk(gen, {"role": "assistant", "content": DEFAULT_CONTENT})
            yield whole[: len(whole) // 2]

    async def _body_parts(self, rec: Received, gen: _Gen, b: Behaviour) -> AsyncIterator[bytes]:
        if isinstance(b, Reply | Stall):
            r = b if isinstance(b, Reply) else Reply(content=b.content)
            if r.leading_whitespace:
                yield (b"\n " * r.leading_whitespace)[: r.leading_whitespace]
            if isinstance(b, Stall):
                async for part in _ticks(b.seconds, b"\n"):
                    yield part
            if r.first_byte_delay:
                await asyncio.sleep(r.first_byte_delay)
            usage = self._usage(gen, rec, r.content, r.reasoning)
            yield self._completion(gen, r.content, r.reasoning, usage)
        elif isinstance(b, ErrorBody200):
            yield _dump({"error": b.error, "user_id": FAKE_USER_ID})
        elif isinstance(b, FinishError200):
            partial = "".join(_split(b.content, b.chunks)[: b.after_chunks])
            usage = self._usage(gen, rec, partial, None)
            yield self._completion(gen, partial, None, usage, "error", b.error)
        elif isinstance(b, WhitespaceOnly):
            yield b"\n" * b.size
        elif isinstance(b, CutOff):
            whole = self._completion(gen, DEFAULT_CONTENT, None, self._usage(gen, rec, "", None))
            yield b"\n"
            yield whole[: len(whole) // 2]
        elif isinstance(b, Drop):
            yield b"\n"
            raise _Dropped(rec.request_id)


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
