"""Closed-loop load generator (aiohttp client).

N workers each loop request -> full response -> next request, until `max_requests` have been
issued or `duration_s` has passed (whichever is first); requests in flight then finish, each
bounded by `timeout_s`, and the whole run by `duration_s + timeout_s + 5` s.

Counted as errors: a transport failure or timeout, a status other than 200, a non-stream
body that is not JSON with `choices` (Responses: `output`), a stream with an in-band error
event (chat: an `error` object; Responses: `response.failed`, `response.error`, `error`),
and a stream that ends without `data: [DONE]`. Time to first token (TTFT) is when the first
`data:` event with content arrives: a choice with non-empty `content` (chat), a
`response.*.delta` event with a non-empty `delta` (Responses). Each answer's `X-Cache`
header is counted (`cache`), so a run can check that it measured hits or misses.

    python -m bench.loadgen --url http://127.0.0.1:8090/api/v1/chat/completions -c 10 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
import yarl

BodyFactory = Callable[[int], bytes]
Api = Literal["chat", "responses"]
# Responses events that end a stream in failure (openrouter-api.md §11.4)
_RESPONSES_FAILED = frozenset({"response.failed", "response.error", "error"})


def chat_body(model: str, *, stream: bool, **extra: Any) -> bytes:
    """A small chat request; temperature 0.7 keeps it out of a deterministic-only cache."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "temperature": 0.7,
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    body.update(extra)
    return orjson.dumps(body)


def responses_body(model: str, *, stream: bool, **extra: Any) -> bytes:
    """The Responses counterpart of `chat_body` (`input`, `max_output_tokens`)."""
    body: dict[str, Any] = {
        "model": model,
        "instructions": "You are a terse assistant.",
        "input": "Say hello in one short sentence.",
        "temperature": 0.7,
        "max_output_tokens": 64,
    }
    if stream:
        body["stream"] = True
    body.update(extra)
    return orjson.dumps(body)


@dataclass(frozen=True)
class LoadSpec:
    url: str
    body: BodyFactory  # request index -> body bytes
    stream: bool
    concurrency: int
    max_requests: int
    duration_s: float
    timeout_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    api: Api = "chat"


@dataclass
class LoadResult:
    issued: int = 0  # requests sent (ok + errors)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    ttft_ms: list[float] = field(default_factory=list)  # successful streams only
    cache: Counter[str] = field(default_factory=Counter)  # X-Cache of successful answers

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        self.issued += other.issued
        self.ok += other.ok
        self.errors.update(other.errors)
        self.elapsed_s += other.elapsed_s
        self.latencies_ms.extend(other.latencies_ms)
        self.ttft_ms.extend(other.ttft_ms)
        self.cache.update(other.cache)

    def summary(self) -> dict[str, Any]:
        return {
            "issued": self.issued,
            "ok": self.ok,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.rps, 1),
            "latency_ms": {f"p{p}": _round(percentile(self.latencies_ms, p)) for p in (50, 90, 99)},
            "ttft_ms": {f"p{p}": _round(percentile(self.ttft_ms, p)) for p in (50, 90, 99)},
            "x_cache": dict(self.cache),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _StreamError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _has_content(event: bytes, api: Api = "chat") -> bool:
    """Does this SSE `data:` event carry content (chat: a choice with non-empty content;
    Responses: a `response.*.delta` with a non-empty `delta`)?"""
    try:
        obj = orjson.loads(event)
    except orjson.JSONDecodeError as exc:
        raise _StreamError("bad_event_json") from exc
    if not isinstance(obj, dict):
        raise _StreamError("bad_event_json")
    if obj.get("error"):
        raise _StreamError("stream_error_event")
    if api == "responses":
        kind = obj.get("type")
        if kind in _RESPONSES_FAILED:
            raise _StreamError("stream_error_event")
        return isinstance(kind, str) and kind.endswith(".delta") and bool(obj.get("delta"))
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            return True
    return False


def _error_after_content(window: bytes, api: Api) -> bool:
    """A failure event in bytes read after the first content (compact JSON, as relayed)."""
    if api == "responses":  # `"error":null` sits in every response object
        return b'"error":{' in window or b'"response.failed"' in window
    return b'"error"' in window


async def _read_stream(resp: aiohttp.ClientResponse, t0: float, api: Api = "chat") -> float:
    """Consume an SSE body; return TTFT in ms or raise _StreamError."""
    ttft: float | None = None
    pending = b""
    tail = b""
    async for chunk in resp.content.iter_any():
        if ttft is None:
            pending += chunk
            while ttft is None:
                end = pending.find(b"\n\n")
                if end < 0:
                    break
                event, pending = pending[:end], pending[end + 2 :]
                if event.startswith(b"data: ") and not event.startswith(b"data: [DONE]"):
                    if _has_content(event[6:], api):
                        ttft = (time.perf_counter() - t0) * 1000
        elif _error_after_content(tail + chunk, api):
            raise _StreamError("stream_error_event")
        tail = (tail + chunk)[-32:]
    if not tail.rstrip().endswith(b"data: [DONE]"):
        raise _StreamError("no_done")
    if ttft is None:
        raise _StreamError("no_content")
    return ttft


async def run_load(spec: LoadSpec, session: aiohttp.ClientSession | None = None) -> LoadResult:
    """Run one closed-loop load; opens its own session unless given one."""
    if session is None:
        async with new_session(spec) as own:
            return await run_load(spec, own)
    result = LoadResult()
    url = yarl.URL(spec.url)
    headers = {"Content-Type": "application/json", **spec.headers}
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + spec.duration_s

    async def one(body: bytes) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    await resp.read()
                    result.errors[f"status_{resp.status}"] += 1
                    return
                cache = resp.headers.get("X-Cache", "none")
                if spec.stream:
                    ttft = await _read_stream(resp, t0, spec.api)
                    result.ttft_ms.append(ttft)
                else:
                    data = await resp.read()
                    try:
                        obj = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        result.errors["bad_json"] += 1
                        return
                    answer = "output" if spec.api == "responses" else "choices"
                    if not isinstance(obj, dict) or not obj.get(answer):
                        result.errors[f"no_{answer}"] += 1
                        return
        except _StreamError as exc:
            result.errors[exc.kind] += 1
            return
        except TimeoutError:
            result.errors["timeout"] += 1
            return
        except aiohttp.ClientError as exc:
            result.errors[type(exc).__name__] += 1
            return
        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
        result.cache[cache] += 1
        result.ok += 1

    async def worker() -> None:
        while result.issued < spec.max_requests and loop.time() < deadline:
            index = result.issued
            result.issued += 1
            await one(spec.body(index))

    workers = [asyncio.ensure_future(worker()) for _ in range(spec.concurrency)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*workers), timeout=spec.duration_s + spec.timeout_s + 5
        )
    except TimeoutError:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        result.errors["harness_timeout"] += max(0, result.issued - result.ok - result.error_count)
    result.elapsed_s = loop.time() - start
    return result


class StatusPages:
    """`count` open status pages: each a `GET /status/events` stream read as it arrives, as
    a browser's EventSource does, on its own connections. `async with` returns once every
    page has its first snapshot event (or raises after `timeout_s`); leaving closes them."""

    def __init__(self, base_url: str, count: int, timeout_s: float = 10.0) -> None:
        self.url = f"{base_url}/status/events"
        self.count = count
        self.timeout_s = timeout_s
        self.events = [0] * count  # snapshot events each page has read
        self.errors: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _read(self, index: int, first: asyncio.Event) -> None:
        assert self._session is not None
        try:
            async with self._session.get(self.url) as resp:
                if resp.status != 200:
                    self.errors[f"HTTP {resp.status}"] += 1
                    return
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        self.events[index] += 1
                        first.set()
            self.errors["stream ended"] += 1
        except aiohttp.ClientError as exc:
            self.errors[type(exc).__name__] += 1

    async def __aenter__(self) -> StatusPages:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        firsts = [asyncio.Event() for _ in range(self.count)]
        self._tasks = [asyncio.create_task(self._read(i, e)) for i, e in enumerate(firsts)]
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.gather(*(e.wait() for e in firsts))
        except TimeoutError:
            await self.__aexit__()
            raise RuntimeError(f"status pages not all open: {dict(self.errors)}") from None
        return self

    async def __aexit__(self, *_: object) -> None:
        await stop_readers(self._tasks, self._session)


async def stop_readers(
    tasks: list[asyncio.Task[None]], session: aiohttp.ClientSession | None
) -> None:
    """Cancel the tasks holding streams open, wait for them, and close their session."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()


def new_session(spec: LoadSpec | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="closed-loop chat load generator")
    parser.add_argument("--url", required=True, help="full chat completions (or responses) URL")
    parser.add_argument("--api", choices=["chat", "responses"], default="chat")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    parser.add_argument("--model", default="bench/ok")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=10)
    parser.add_argument("-n", "--requests", type=int, default=1000, help="at most this many")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="at most this long (s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request (s)")
    args = parser.parse_args(argv)
    make = responses_body if args.api == "responses" else chat_body
    body = make(args.model, stream=args.stream)
    headers = dict(h.split(":", 1) for h in args.header)
    spec = LoadSpec(
        url=args.url,
        body=lambda _i: body,
        stream=args.stream,
        concurrency=args.concurrency,
        max_requests=args.requests,
        duration_s=args.duration,
        timeout_s=args.timeout,
        headers={k.strip(): v.strip() for k, v in headers.items()},
        api=args.api,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(run_load(spec))
    else:
        result = uvloop.run(run_load(spec))
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
