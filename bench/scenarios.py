"""The benchmark scenarios, one `Scenario` per row group of the report.

To add one (e.g. the planned keys + quota + cache run), append a `Scenario` in
`scenarios()`: give it a body factory, the targets it makes sense for, how many upstream
calls each request should cause (`upstream`), and, if it needs a differently configured
proxy, `proxy_env` (the runner then starts a dedicated proxy for it) and a `setup` hook
(e.g. `create_proxy_key`, whose result goes into the request headers).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bench.loadgen import chat_body

Mode = Literal["full", "quick", "smoke"]
TargetName = Literal["direct", "aiohttp", "httpx", "httpx-aiohttp", "proxy"]
ALL_TARGETS: tuple[TargetName, ...] = ("direct", "aiohttp", "httpx", "httpx-aiohttp", "proxy")
LABELS: dict[str, str] = {
    "direct": "direct",
    "aiohttp": "floor aiohttp",
    "httpx": "floor httpx",
    "httpx-aiohttp": "floor httpx+aiohttp",
    "proxy": "proxy",
}
FLOORS: tuple[TargetName, ...] = ("aiohttp", "httpx", "httpx-aiohttp")

# (target, request index) -> body bytes
BodyFor = Callable[[str, int], bytes]
# a hook run once against a started proxy; returns extra request headers
Setup = Callable[["SetupContext"], Awaitable[Mapping[str, str]]]
# what the fake must have counted per request sent: "chat" = chat_requests, "ok" =
# ok_requests (every request finally served once, e.g. after a fallback); None = no check
Check = Literal["chat", "ok"]


@dataclass(frozen=True)
class SetupContext:
    proxy_argv_prefix: tuple[str, ...]  # e.g. (python, -m, app): add "keys", "create", ...
    env: Mapping[str, str]  # the proxy's environment (same PROXY_DB_PATH)


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
    check: Check | None = "chat"
    proxy_env: Mapping[str, str] = field(default_factory=dict)
    setup: Setup | None = None

    def upstream_calls(self, target: str) -> int:
        return self.upstream.get(target, 1)


def same_body(model: str, *, stream: bool) -> BodyFor:
    body = chat_body(model, stream=stream)
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
    # Planned: keys + quota + cache. Sketch, to be enabled once the proxy has them:
    # Scenario(name="keys+quota+cache c=10", what="...", stream=False, concurrency=10,
    #          body=same_body_with(temperature=0) ..., targets=("direct", "proxy"),
    #          check=None, proxy_env={"PROXY_CACHE": "deterministic"},
    #          setup=lambda ctx: create_proxy_key(ctx, "--rpm", "1000000"))
    return out


def startup_spawns(mode: Mode) -> int:
    """Extra cold starts per server, on top of the one that serves the load scenarios."""
    return {"full": 3, "quick": 1, "smoke": 0}[mode]
