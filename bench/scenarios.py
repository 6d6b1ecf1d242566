"""The benchmark scenarios, one `Scenario` per row group of the report.

To add one, append a `Scenario` in `scenarios()`: give it a body factory, the targets it
makes sense for, how many upstream calls each request should cause (`upstream`, `check`)
and, if it measures cache behaviour, the `X-Cache` every answer must carry (`expect_cache`).

Proxy targets are `ProxySpec`s (`PROXY_TARGETS`): `proxy` is the proxy in open mode with
default settings; `key`, `key-miss` and `key-hit` are one second proxy process holding a
client key (created by `setup` before it starts), measured with three kinds of request. A
proxy with other settings (e.g. metrics off, once there is such a setting) is one more
`ProxySpec` with its `env` and a target name mapped to it. `proxy-watched` is the open-mode
proxy again, measured while `status_pages` event streams are open on it. `key-redis` is the
`key` proxy with `PROXY_REDIS_URL` to a redis-server the runner starts (`ProxySpec.redis`).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.loadgen import Api, chat_body, responses_body

Mode = Literal["full", "quick", "smoke"]
TargetName = Literal[
    "direct",
    "aiohttp",
    "httpx",
    "httpx-aiohttp",
    "proxy",
    "key",
    "key-miss",
    "key-hit",
    "proxy-watched",
    "key-redis",
]
# what --targets chooses from; the keyed-proxy targets come with `proxy`
ALL_TARGETS: tuple[TargetName, ...] = ("direct", "aiohttp", "httpx", "httpx-aiohttp", "proxy")
LABELS: dict[str, str] = {
    "direct": "direct",
    "aiohttp": "floor aiohttp",
    "httpx": "floor httpx",
    "httpx-aiohttp": "floor httpx+aiohttp",
    "proxy": "proxy",
    "key": "proxy + key",
    "key-miss": "proxy + key, cache miss",
    "key-hit": "proxy + key, cache hit",
    "proxy-watched": "proxy + 10 status pages",
    "key-redis": "proxy + key, state in Redis",
}
FLOORS: tuple[TargetName, ...] = ("aiohttp", "httpx", "httpx-aiohttp")

# (target, request index) -> body bytes
BodyFor = Callable[[str, int], bytes]
# a hook run once against a started proxy; returns extra request headers
Setup = Callable[["SetupContext"], Awaitable[Mapping[str, str]]]
# what the fake must have counted: "calls" = upstream requests on the scenario's route =
# requests sent x `upstream` (`upstream` 0 = cache hits: at most one request over the whole
# cell, the one that filled the cache); "ok" = ok_requests = requests sent (every request
# finally served once, e.g. after a fallback); None = no check
Check = Literal["calls", "ok"]


@dataclass(frozen=True)
class SetupContext:
    proxy_argv_prefix: tuple[str, ...]  # e.g. (python, -m, app): add "keys", "create", ...
    env: Mapping[str, str]  # the proxy's environment (same PROXY_DB_PATH)


@dataclass(frozen=True)
class ProxySpec:
    """One proxy process: settings beyond the runner's, and a hook run before it starts
    (with the proxy's environment, so the same database) whose headers every request of
    its targets carries."""

    name: str  # one process per name, started at first use and kept for the run
    env: Mapping[str, str] = field(default_factory=dict)
    setup: Setup | None = None
    redis: bool = False  # PROXY_REDIS_URL to a redis-server the runner starts


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # one line for the report
    stream: bool
    concurrency: int
    body: BodyFor
    duration_s: float  # per round and target, at most
    max_requests: int  # per round and target, at most
    rounds: int = 3
    warmup_s: float = 0.5
    timeout_s: float = 30.0
    targets: tuple[TargetName, ...] = ALL_TARGETS
    upstream: Mapping[str, int] = field(default_factory=dict)  # calls per request, default 1
    check: Check | None = "calls"
    api: Api = "chat"  # the route: /v1/chat/completions or /v1/responses
    expect_cache: Mapping[str, str] = field(default_factory=dict)  # target -> X-Cache value
    # target -> open `GET /status/events` streams read on its server while it is measured
    status_pages: Mapping[str, int] = field(default_factory=dict)

    def upstream_calls(self, target: str) -> int:
        return self.upstream.get(target, 1)


def same_body(model: str, *, stream: bool, **extra: Any) -> BodyFor:
    body = chat_body(model, stream=stream, **extra)
    return lambda _target, _i: body


def same_api_body(api: Api, model: str, *, stream: bool) -> BodyFor:
    body = (responses_body if api == "responses" else chat_body)(model, stream=stream)
    return lambda _target, _i: body


def fallback_body() -> BodyFor:
    """Proxy: a fresh failing model per request, then `bench/ok` via `models`.

    A fresh id per request keeps the proxy from putting the failing model in cooldown and
    skipping it, so every request pays for two attempts. Others get `bench/ok` directly.
    """
    direct = chat_body("bench/ok", stream=False)
    serial = itertools.count()

    def body(target: str, _i: int) -> bytes:
        if target != "proxy":
            return direct
        return chat_body(f"bench/fail-429-r{next(serial)}", stream=False, models=["bench/ok"])

    return body


_serial = itertools.count()  # shared, so no two unique bodies of a run are ever equal


def unique_body(temperatures: Mapping[str, float], default: float = 0.7) -> BodyFor:
    """`bench/ok` non-stream, a different user message for every request of the run, at
    the target's temperature (0 = eligible for the default `deterministic` cache, so a
    keyed proxy's cache looks up, misses and stores each one; 0.7 = never cached)."""

    def body(target: str, _i: int) -> bytes:
        n = next(_serial)
        messages = [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": f"Say hello in one short sentence. ({n})"},
        ]
        temperature = temperatures.get(target, default)
        return chat_body("bench/ok", stream=False, messages=messages, temperature=temperature)

    return body


async def create_proxy_key(ctx: SetupContext, *limits: str) -> Mapping[str, str]:
    """Create a client key with the proxy's CLI (e.g. limits "--rpm", "100000")."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *ctx.proxy_argv_prefix, "keys", "create", "bench", *limits,
        env=dict(ctx.env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"keys create failed: {err.decode(errors='replace').strip()}")
    return {"Authorization": f"Bearer {out.decode().strip()}"}


async def bench_key(ctx: SetupContext) -> Mapping[str, str]:
    """A key with every limit set (so every check runs) and high enough never to refuse;
    `--paid` because `bench/ok` is priced (a free-only key would get 403)."""
    return await create_proxy_key(
        ctx, "--rpm", "10000000", "--rpd", "1000000000", "--tpd", "1000000000000",
        "--concurrency", "100000", "--paid",
    )  # fmt: skip


OPEN_PROXY = ProxySpec("proxy")
KEYED_PROXY = ProxySpec("proxy-key", setup=bench_key)
# Issue 25: the same keyed proxy with its quotas, budget and cooldowns in Redis.
REDIS_KEYED_PROXY = ProxySpec("proxy-key-redis", setup=bench_key, redis=True)
PROXY_TARGETS: dict[str, ProxySpec] = {
    "proxy": OPEN_PROXY,
    "key": KEYED_PROXY,
    "key-miss": KEYED_PROXY,
    "key-hit": KEYED_PROXY,
    # the open-mode proxy itself (the same process), measured with status pages open
    "proxy-watched": OPEN_PROXY,
    "key-redis": REDIS_KEYED_PROXY,
}
STATUS_PAGES = 10


def scenarios(mode: Mode) -> list[Scenario]:
    full = mode == "full"
    smoke = mode == "smoke"
    rounds = 3 if full else 1
    dur = 3.0 if full else 1.5
    warm = 0.0 if smoke else 0.5
    out: list[Scenario] = []
    for c in (1, 10, 50):
        if smoke and c != 10:
            continue
        out.append(
            Scenario(
                name=f"non-stream c={c}",
                what=f"non-stream chat, {c} concurrent clients, closed loop",
                stream=False,
                concurrency=c,
                body=same_body("bench/ok", stream=False),
                duration_s=dur,
                max_requests=40 if smoke else 1_000_000,
                rounds=rounds,
                warmup_s=warm,
            )
        )
    chunks, gap_ms = (5, 2) if smoke else (20, 5)
    stream_model = f"bench/stream-{chunks}x{gap_ms}"
    for c in (1, 10, 50):
        if smoke and c != 10:
            continue
        out.append(
            Scenario(
                name=f"stream c={c}",
                what=f"streams of {chunks} chunks {gap_ms} ms apart, {c} concurrent clients",
                stream=True,
                concurrency=c,
                body=same_body(stream_model, stream=True),
                duration_s=dur,
                max_requests=20 if smoke else 1_000_000,
                rounds=rounds,
                warmup_s=warm,
            )
        )
    slow_n = 50 if smoke else 1000
    hold_ms = 1000 if smoke else (5000 if full else 3000)
    out.append(
        Scenario(
            name=f"slow streams x{slow_n}",
            what=f"{slow_n} concurrent streams held open {hold_ms / 1000:.0f} s "
            "(a chunk per second): errors and RSS",
            stream=True,
            concurrency=slow_n,
            body=same_body(f"bench/slow-{hold_ms}", stream=True),
            duration_s=1.0,
            max_requests=slow_n,
            rounds=1,
            warmup_s=0.0,
            timeout_s=hold_ms / 1000 + 20,
        )
    )
    out.append(
        Scenario(
            name="fallback c=10",
            what="proxy: first model answers a provider 429, the `models` entry serves "
            "(direct: one call to the serving model)",
            stream=False,
            concurrency=5 if smoke else 10,
            body=fallback_body(),
            duration_s=dur,
            max_requests=20 if smoke else 1_000_000,
            rounds=rounds,
            warmup_s=warm,
            targets=("direct", "proxy"),
            upstream={"proxy": 2},
            check="ok",
        )
    )
    # Issues 18/19: the team features against open mode, same requests, same run. Shorter
    # rounds in a full run keep the whole run under 10 minutes.
    feature_dur = 2.0 if full else dur
    for c in (1, 10):
        if smoke and c != 10:
            continue
        out.append(
            Scenario(
                name=f"feature c={c}",
                what="open mode (`proxy`) against a client key with limits: quota check and "
                "usage record per request (`key`), plus a cache miss (`key-miss`: "
                "temperature 0, every request different); `key-redis`: `key` with its "
                "state in a local redis-server",
                stream=False,
                concurrency=c,
                body=unique_body({"key-miss": 0.0}),
                duration_s=feature_dur,
                max_requests=40 if smoke else 1_000_000,
                rounds=rounds,
                warmup_s=warm,
                targets=("proxy", "key", "key-miss", "key-redis"),  # direct: non-stream c=1/10
                expect_cache={
                    "proxy": "BYPASS",
                    "key": "BYPASS",
                    "key-miss": "MISS",
                    "key-redis": "BYPASS",
                },
            )
        )
    out.append(
        Scenario(
            name="cache hit c=10",
            what="the same temperature-0 request repeated: after the first, answered from "
            "the keyed proxy's cache with no upstream call",
            stream=False,
            concurrency=10,
            body=same_body("bench/ok", stream=False, temperature=0),
            duration_s=feature_dur,
            max_requests=40 if smoke else 1_000_000,
            rounds=rounds,
            warmup_s=max(warm, 0.1),  # the first (missing) request falls in the warm-up
            targets=("direct", "key-hit"),
            upstream={"key-hit": 0},
            expect_cache={"key-hit": "HIT"},
        )
    )
    # The same against an upstream that takes 20 ms to answer, as every real one does (free
    # models take seconds): what a hit saves when the upstream, not the load generator, is
    # the bound.
    out.append(
        Scenario(
            name="cache hit, 20 ms upstream c=10",
            what="as `cache hit c=10`, against an upstream answering after 20 ms",
            stream=False,
            concurrency=10,
            body=same_body("bench/wait-20", stream=False, temperature=0),
            duration_s=feature_dur,
            max_requests=40 if smoke else 1_000_000,
            rounds=rounds,
            warmup_s=max(warm, 0.1),
            targets=("direct", "key-hit"),
            upstream={"key-hit": 0},
            expect_cache={"key-hit": "HIT"},
        )
    )
    # Issue 27: ten open status pages (each a `GET /status/events` stream, a snapshot event
    # every 2 s) against none, on the same open-mode proxy process in the same rounds.
    out.append(
        Scenario(
            name="status pages c=10",
            what=f"non-stream chat, 10 clients: open mode with no status page open (`proxy`) "
            f"and with {STATUS_PAGES} `GET /status/events` streams read throughout "
            "(`proxy-watched`, the same process)",
            stream=False,
            concurrency=10,
            body=same_body("bench/ok", stream=False),
            duration_s=feature_dur,
            max_requests=40 if smoke else 1_000_000,
            rounds=rounds,
            warmup_s=warm,
            targets=("proxy", "proxy-watched"),  # direct: see non-stream c=10
            status_pages={"proxy-watched": STATUS_PAGES},
        )
    )
    # Issue 17: the Responses relay, against chat's `stream c=50` (rounds of `feature_dur`:
    # the run's 10 minutes).
    c = 10 if smoke else 50
    out.append(
        Scenario(
            name=f"responses stream c={c}",
            what=f"/v1/responses streams of {chunks} deltas {gap_ms} ms apart, {c} "
            "concurrent clients (compare with `stream c=50`)",
            stream=True,
            concurrency=c,
            body=same_api_body("responses", stream_model, stream=True),
            duration_s=feature_dur,
            max_requests=20 if smoke else 1_000_000,
            rounds=rounds,
            warmup_s=warm,
            targets=("direct", "proxy"),
            api="responses",
        )
    )
    return out


def startup_spawns(mode: Mode) -> int:
    """Extra cold starts per server, on top of the one that serves the load scenarios."""
    return {"full": 3, "quick": 1, "smoke": 0}[mode]
