"""A fast fake OpenRouter for benchmarks: raw asyncio + httptools on uvloop.

Routes (the subset of `openrouter-api.md` a chat benchmark needs):

- `POST /api/v1/chat/completions`: a realistic non-stream body with usage, or with
  `"stream": true` an SSE stream shaped like OpenRouter's (§6): `: OPENROUTER PROCESSING`, a
  role chunk, N content chunks D ms apart, a finish chunk, a usage chunk with `choices: []`,
  `data: [DONE]`.
- `POST /api/v1/responses` (§11): a Responses body with usage, or with `"stream": true`
  OpenRouter's data-only event stream: `response.created`, `response.in_progress`,
  `response.output_item.added`, `response.content_part.added`, N `response.output_text.delta`
  D ms apart, `response.output_text.done`, `response.content_part.done`,
  `response.output_item.done`, `response.completed` with usage, `data: [DONE]`.
- `GET /api/v1/models`: a small catalogue holding the bench model ids.
- `GET /api/v1/key`, `GET /healthz`: enough for `openrouter-proxy check` and readiness polls.
- `GET /__stats` (counters, see `Stats`), `POST /__reset` and `POST /__reset_peak` (the
  peak of concurrent streams restarts from the current count).

Behaviour is chosen per request by the model name, because the proxy forwards the body but
not arbitrary headers:

- `bench/stream-20x5`: streams of 20 content chunks 5 ms apart (non-stream: a normal body);
- `bench/slow-5000`: a stream held open ~5000 ms with one content chunk per
  `--slow-interval-ms` (the first at once, so a proxy commits the response straight away);
- `bench/wait-20`: a non-stream answer sent 20 ms after the request (an upstream that
  takes time, as every real one does);
- `bench/fail-429`: a provider 429 (`openrouter-api.md` §5.3); `bench/fail-NNN` any status.
  Anything may follow the status (`bench/fail-429-r17`), which lets a benchmark use a fresh
  failing model per request so that no proxy cooldown skips it;
- any other model (e.g. `bench/ok`): success, streams use `--chunks` / `--delay-ms`.

One connection serves one request at a time (keep-alive, no pipelining).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

CHAT_PATH = b"/api/v1/chat/completions"
RESPONSES_PATH = b"/api/v1/responses"
BENCH_MODELS = ("bench/ok", "bench/stream-20x5", "bench/slow-5000", "bench/fail-429")
_ID_MARK = b"__GENID__"
_MODEL_MARK = "__MODEL__"
_CREATED = int(time.time())


@dataclass(frozen=True, slots=True)
class FakeConfig:
    chunks: int = 20
    delay_ms: float = 5.0
    slow_interval_ms: float = 1000.0


@dataclass(frozen=True, slots=True)
class Behaviour:
    kind: str  # "ok" | "slow" | "fail" | "wait"
    chunks: int = 0
    delay_ms: float = 0.0
    hold_ms: float = 0.0
    status: int = 200


_STREAM_RE = re.compile(r"bench/stream-(\d+)x(\d+(?:\.\d+)?)$")
_SLOW_RE = re.compile(r"bench/slow-(\d+)$")
_FAIL_RE = re.compile(r"bench/fail-(\d{3})")
_WAIT_RE = re.compile(r"bench/wait-(\d+)$")


def parse_model(model: str, config: FakeConfig) -> Behaviour:
    """Map a model name to what the fake does with it."""
    if m := _STREAM_RE.match(model):
        return Behaviour("ok", chunks=int(m[1]), delay_ms=float(m[2]))
    if m := _SLOW_RE.match(model):
        return Behaviour("slow", hold_ms=float(m[1]))
    if m := _FAIL_RE.match(model):
        return Behaviour("fail", status=int(m[1]))
    if m := _WAIT_RE.match(model):
        return Behaviour("wait", hold_ms=float(m[1]))
    return Behaviour("ok", chunks=config.chunks, delay_ms=config.delay_ms)


class Stats:
    """Counters served by `GET /__stats`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.chat_requests = 0  # every POST to the chat route, whatever the answer
        self.responses_requests = 0  # every POST to the Responses route, whatever the answer
        self.ok_requests = 0  # answered 200 (non-stream or stream), on either route
        self.failed_requests = 0  # answered a `bench/fail-NNN` error
        self.bad_requests = 0  # unparseable body, wrong route or method
        self.streams_started = 0
        self.streams_completed = 0  # sent `data: [DONE]`
        self.streams_aborted = 0  # the client went away first
        self.active_streams = 0
        self.peak_active_streams = 0
        self.connections = 0

    def as_json(self) -> bytes:
        return orjson.dumps(self.__dict__)


# ---------------------------------------------------------------- bodies


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 9,
        "completion_tokens": 10,
        "total_tokens": 19,
        "cost": 0.00000735,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "cost_details": {"upstream_inference_cost": 0.00000735},
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
    }


def _completion_template() -> bytes:
    body = {
        "id": "__GENID__",
        "object": "chat.completion",
        "created": _CREATED,
        "model": _MODEL_MARK,
        "provider": "BenchProvider",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I assist you today?",
                    "refusal": None,
                    "reasoning": None,
                },
            }
        ],
        "usage": _usage(),
    }
    return orjson.dumps(body)


def _chunk(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
    event: dict[str, Any] = {
        "id": "__GENID__",
        "provider": "BenchProvider",
        "model": _MODEL_MARK,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "choices": [],
    }
    if delta is not None:
        event["choices"] = [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": finish,
                "native_finish_reason": finish,
                "logprobs": None,
            }
        ]
    else:
        event["usage"] = _usage()
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding frame."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


@dataclass(frozen=True, slots=True)
class Templates:
    """Per-model byte templates; only the generation id changes per request.

    SSE payloads are kept unframed: the id's length differs from the mark's, so the
    chunked-encoding frames are built after the id is in place.
    """

    completion: bytes
    role: bytes  # the keep-alive comment and the role chunk (Responses: the preamble events)
    content: bytes  # Responses: with a `__SEQ__` mark for the sequence number
    finish: bytes  # finish chunk + usage chunk + [DONE] (Responses: built per delta count)
    model: str = ""
    responses: bool = False


_COMPLETION = _completion_template()
_ROLE = b": OPENROUTER PROCESSING\n\n" + _chunk({"role": "assistant", "content": ""})
_CONTENT = _chunk({"content": "tok "})
_FINISH = _chunk({"content": ""}, "stop") + _chunk(None) + b"data: [DONE]\n\n"
_LAST_FRAME = b"0\r\n\r\n"
_templates: dict[str, Templates] = {}


def templates_for(model: str) -> Templates:
    tpl = _templates.get(model)
    if tpl is None:
        name = orjson.dumps(model)[1:-1]
        mark = _MODEL_MARK.encode()
        tpl = Templates(
            completion=_COMPLETION.replace(mark, name),
            role=_ROLE.replace(mark, name),
            content=_CONTENT.replace(mark, name),
            finish=_FINISH.replace(mark, name),
        )
        if len(_templates) < 4096:
            _templates[model] = tpl
    return tpl


_SEQ_MARK = b"__SEQ__"
_MSG_ID = "msg_tmp_bench0000001"


def _responses_usage() -> dict[str, Any]:
    """§11.2: Responses names plus OpenRouter's cost fields."""
    return {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 19,
        "cost": 0.00000735,
        "is_byok": False,
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_input_cost": 0.00000135,
            "upstream_inference_output_cost": 0.000006,
        },
    }


def _response_object(status: str, text: str | None) -> dict[str, Any]:
    """The `response` object (§11.2); `text` None = no output yet (stream preamble)."""
    output: list[dict[str, Any]] = []
    if text is not None:
        output = [_message_item(text, "completed")]
    return {
        "object": "response",
        "id": "__GENID__",
        "created_at": _CREATED,
        "model": _MODEL_MARK,
        "status": status,
        "error": None,
        "output_text": "",
        "incomplete_details": None,
        "output": output,
        "usage": _responses_usage() if text is not None else None,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "service_tier": "auto",
        "previous_response_id": None,
    }


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"role": "assistant", "type": "message", "status": status, "id": _MSG_ID,
            "content": content}  # fmt: skip


def _event(kind: str, seq: int | None, **fields: Any) -> bytes:
    """One data-only Responses event (§11.3: no `event:` line); seq None = `__SEQ__` mark."""
    data = orjson.dumps({"type": kind, **fields, "sequence_number": 0})
    if seq is None:
        data = data.replace(b'"sequence_number":0', b'"sequence_number":' + _SEQ_MARK)
    else:
        data = data.replace(b'"sequence_number":0', b'"sequence_number":%d' % seq)
    return b"data: " + data + b"\n\n"


_AT = {"item_id": _MSG_ID, "output_index": 0, "content_index": 0}
_RESP_HEAD = (
    b": OPENROUTER PROCESSING\n\n"
    + _event("response.created", 0, response=_response_object("in_progress", None))
    + _event("response.in_progress", 1, response=_response_object("in_progress", None))
    + _event(
        "response.output_item.added",
        2,
        output_index=0,
        item={**_message_item("", "in_progress"), "content": []},
    )
    + _event(
        "response.content_part.added",
        3,
        **_AT,
        part={"type": "output_text", "annotations": [], "text": ""},
    )
)
_RESP_DELTA = _event("response.output_text.delta", None, logprobs=[], **_AT, delta="tok ")


def _responses_tail(n: int) -> bytes:
    """The events after n deltas (sequence numbers 4 + n on), ending with `[DONE]`."""
    text = "tok " * n
    part = {"type": "output_text", "annotations": [], "text": text}
    seq = 4 + n
    return (
        _event("response.output_text.done", seq, **_AT, text=text, logprobs=[])
        + _event("response.content_part.done", seq + 1, **_AT, part=part)
        + _event("response.output_item.done", seq + 2, output_index=0, item=_message_item(text))
        + _event("response.completed", seq + 3, response=_response_object("completed", text))
        + b"data: [DONE]\n\n"
    )


_RESP_BODY = orjson.dumps(_response_object("completed", "Hello! How can I assist you today?"))
_resp_templates: dict[str, Templates] = {}
_resp_tails: dict[tuple[str, int], bytes] = {}


def _with_model(template: bytes, model: str) -> bytes:
    return template.replace(_MODEL_MARK.encode(), orjson.dumps(model)[1:-1])


def responses_templates_for(model: str) -> Templates:
    tpl = _resp_templates.get(model)
    if tpl is None:
        tpl = Templates(
            completion=_with_model(_RESP_BODY, model),
            role=_with_model(_RESP_HEAD, model),
            content=_with_model(_RESP_DELTA, model),
            finish=b"",
            model=model,
            responses=True,
        )
        if len(_resp_templates) < 4096:
            _resp_templates[model] = tpl
    return tpl


def responses_tail_for(model: str, n: int) -> bytes:
    """The closing events after n deltas; their sequence numbers and text depend on n."""
    key = (model, n)
    tail = _resp_tails.get(key)
    if tail is None:
        tail = _with_model(_responses_tail(n), model)
        if len(_resp_tails) < 4096:
            _resp_tails[key] = tail
    return tail


def _error_body(status: int, model: str) -> bytes:
    if status == 429:
        error: dict[str, Any] = {
            "message": "Provider returned error",
            "code": 429,
            "metadata": {
                "raw": f"{model} is temporarily rate-limited upstream. Please retry shortly, "
                "or add your own key to accumulate your rate limits: "
                "https://openrouter.ai/settings/integrations",
                "provider_name": "BenchProvider",
                "is_byok": False,
                "provider_error_code": "engine_overloaded",
                "limit_source": "upstream_provider_shared_pool",
                "remedy_hint": "Retry shortly, or route to another provider.",
            },
        }
    else:
        error = {
            "message": "Provider returned error",
            "code": status,
            "metadata": {"raw": f"bench failure {status}", "provider_name": "BenchProvider"},
        }
    return orjson.dumps({"error": error, "user_id": "user_bench"})


def _catalogue() -> bytes:
    def card(model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "canonical_slug": model_id,
            "name": f"Bench: {model_id}",
            "created": _CREATED,
            "description": "A model served by the benchmark fake.",
            "context_length": 131072,
            "architecture": {
                "modality": "text->text",
                "input_modalities": ["text"],
                "output_modalities": ["text"],
                "tokenizer": "Other",
                "instruct_type": None,
            },
            "pricing": {"prompt": "0.0000001", "completion": "0.0000002"},
            "top_provider": {
                "context_length": 131072,
                "max_completion_tokens": 8192,
                "is_moderated": False,
            },
            "per_request_limits": None,
            "supported_parameters": ["max_tokens", "temperature", "top_p", "stop", "seed"],
            "default_parameters": None,
            "supported_voices": None,
            "links": {"details": f"/api/v1/models/{model_id}/endpoints"},
        }

    data = [card(m) for m in BENCH_MODELS]
    return orjson.dumps({"data": data, "total_count": len(data), "links": {"next": None}})


_KEY = orjson.dumps(
    {
        "data": {
            "label": "sk-or-v1-ben...nch",
            "limit": None,
            "usage": 0,
            "is_free_tier": False,
            "limit_remaining": None,
        }
    }
)
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests"}


def _response(status: int, body: bytes, extra: bytes = b"", *, close: bool = False) -> bytes:
    reason = _REASONS.get(status, b"Status")
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s"
        % (status, reason, len(body), extra, conn, body)
    )


# ---------------------------------------------------------------- server


class FakeServer:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.catalogue = _catalogue()
        self._next_id = 0
        self._behaviours: dict[str, Behaviour] = {}

    def behaviour(self, model: str) -> Behaviour:
        b = self._behaviours.get(model)
        if b is None:
            b = parse_model(model, self.config)
            if len(self._behaviours) < 4096:
                self._behaviours[model] = b
        return b

    def generation_id(self) -> bytes:
        self._next_id += 1
        return b"gen-%d-bench%015d" % (_CREATED, self._next_id)


class FakeConnection(asyncio.Protocol):
    __slots__ = ("server", "transport", "parser", "url", "body", "closed", "stream_task")

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.closed = False
        self.stream_task: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream_task is not None and not self.stream_task.done():
            self.stream_task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.server.stats.bad_requests += 1
            self._send(_response(400, b'{"error":"bad request"}', close=True), close=True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path == CHAT_PATH:
            self._chat(keep)
        elif method == b"POST" and path == RESPONSES_PATH:
            self._chat(keep, responses=True)
        elif method == b"GET" and path == b"/api/v1/models":
            self._send(_response(200, self.server.catalogue, close=not keep), close=not keep)
        elif method == b"GET" and path == b"/__stats":
            self._send(_response(200, self.server.stats.as_json(), close=not keep), not keep)
        elif method == b"POST" and path == b"/__reset":
            self.server.stats.reset()
            self._send(_response(200, b'{"ok":true}', close=not keep), close=not keep)
        elif method == b"POST" and path == b"/__reset_peak":
            stats = self.server.stats
            stats.peak_active_streams = stats.active_streams
            self._send(_response(200, b'{"ok":true}', close=not keep), close=not keep)
        elif method == b"GET" and path == b"/api/v1/key":
            self._send(_response(200, _KEY, close=not keep), close=not keep)
        elif method == b"GET" and path == b"/healthz":
            self._send(_response(200, b'{"status":"ok"}', close=not keep), close=not keep)
        else:
            self.server.stats.bad_requests += 1
            body = b'{"error":{"code":404,"message":"Not Found"}}'
            self._send(_response(404, body, close=not keep), close=not keep)

    # handlers
    def _send(self, data: bytes, close: bool = False) -> None:
        if self.transport is None or self.closed:
            return
        self.transport.write(data)
        if close:
            self.transport.close()

    def _chat(self, keep: bool, responses: bool = False) -> None:
        server = self.server
        stats = server.stats
        if responses:
            stats.responses_requests += 1
        else:
            stats.chat_requests += 1
        try:
            body, self.body = b"".join(self.body), []  # not kept while a stream is held
            request = orjson.loads(body)
            model = request["model"]
            if not isinstance(model, str):
                raise TypeError("model")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            stats.bad_requests += 1
            body = b'{"error":{"code":400,"message":"bench fake: body needs a string model"}}'
            self._send(_response(400, body, close=not keep), close=not keep)
            return
        behaviour = server.behaviour(model)
        gen_id = server.generation_id()
        if behaviour.kind == "fail":
            stats.failed_requests += 1
            body = _error_body(behaviour.status, model)
            self._send(_response(behaviour.status, body, close=not keep), close=not keep)
            return
        stats.ok_requests += 1
        tpl = templates_for(model)
        if responses:
            tpl = responses_templates_for(model)
        if request.get("stream") is not True:
            body = tpl.completion.replace(_ID_MARK, gen_id)
            extra = b"X-Generation-Id: %s\r\n" % gen_id
            answer = _response(200, body, extra, close=not keep)
            if behaviour.kind == "wait":
                loop = asyncio.get_running_loop()
                loop.call_later(behaviour.hold_ms / 1000, self._send, answer, not keep)
                return
            self._send(answer, close=not keep)
            return
        self.stream_task = asyncio.get_running_loop().create_task(
            self._stream(behaviour, tpl, gen_id, keep)
        )

    async def _stream(self, b: Behaviour, tpl: Templates, gen_id: bytes, keep: bool) -> None:
        stats = self.server.stats
        stats.streams_started += 1
        stats.active_streams += 1
        stats.peak_active_streams = max(stats.peak_active_streams, stats.active_streams)
        transport = self.transport
        assert transport is not None
        content = _frame(tpl.content.replace(_ID_MARK, gen_id))
        delta = tpl.content.replace(_ID_MARK, gen_id)
        sent = 0  # content events so far (Responses: they carry sequence numbers 4, 5, ...)

        def next_content() -> bytes:
            nonlocal sent
            sent += 1
            if tpl.responses:
                return _frame(delta.replace(_SEQ_MARK, b"%d" % (3 + sent)))
            return content

        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Generation-Id: %s\r\nTransfer-Encoding: chunked\r\n%s\r\n"
            % (gen_id, b"" if keep else b"Connection: close\r\n")
        )
        try:
            transport.write(head + _frame(tpl.role.replace(_ID_MARK, gen_id)))
            if b.kind == "slow":
                interval = self.server.config.slow_interval_ms / 1000
                deadline = time.monotonic() + b.hold_ms / 1000
                transport.write(next_content())
                while not self.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    await asyncio.sleep(min(interval, left))
                    if left > interval and not self.closed:
                        transport.write(next_content())
            else:
                delay = b.delay_ms / 1000
                for _ in range(b.chunks):
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if self.closed:
                        break
                    transport.write(next_content())
            if self.closed:
                stats.streams_aborted += 1
                return
            finish = responses_tail_for(tpl.model, sent) if tpl.responses else tpl.finish
            transport.write(_frame(finish.replace(_ID_MARK, gen_id)) + _LAST_FRAME)
            stats.streams_completed += 1
            if not keep:
                transport.close()
        except asyncio.CancelledError:
            stats.streams_aborted += 1
        finally:
            stats.active_streams -= 1
            self.stream_task = None


async def serve(host: str, port: int, config: FakeConfig) -> None:
    server = FakeServer(config)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: FakeConnection(server), host, port, backlog=4096, reuse_address=True
    )
    bound = srv.sockets[0].getsockname()
    print(f"fake-openrouter listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env.get("BENCH_FAKE_PORT", "8090")))
    parser.add_argument(
        "--chunks",
        type=int,
        default=int(env.get("BENCH_FAKE_CHUNKS", "20")),
        help="content chunks per stream for models without an override (env BENCH_FAKE_CHUNKS)",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=float(env.get("BENCH_FAKE_DELAY_MS", "5")),
        help="ms between content chunks (env BENCH_FAKE_DELAY_MS)",
    )
    parser.add_argument(
        "--slow-interval-ms",
        type=float,
        default=float(env.get("BENCH_FAKE_SLOW_INTERVAL_MS", "1000")),
        help="ms between the sparse chunks of bench/slow-N streams",
    )
    args = parser.parse_args(argv)
    config = FakeConfig(args.chunks, args.delay_ms, args.slow_interval_ms)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.host, args.port, config))
    else:
        uvloop.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
