"""Benchmark runner.

    python -m bench.run            # full run, < 10 min
    python -m bench.run --quick    # one short round per scenario
    python -m bench.run --smoke    # a few hundred requests, < 60 s; exit 1 on any error or
                                   # on an upstream count that does not match what was sent
    python -m bench.run --targets direct,aiohttp,httpx,httpx-aiohttp   # floors only

Starts the fake OpenRouter, the floors and the proxy as subprocesses (the servers pinned to
the first CPU, the fake and this process, which generates the load, to the second), runs
every scenario in rounds that alternate the targets, and prints markdown tables on stdout
(progress goes to stderr). Timing never sets the exit status; errors and upstream counts do
(a floor's errors only in --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import LoadSpec, StatusPages, chat_body, new_session, run_load
from bench.procs import (
    REPO,
    CpuPlan,
    RedisProcess,
    RssSampler,
    Server,
    clean_env,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    hwm_kib,
    uvicorn_argv,
)
from bench.report import Cell, Startup, budget_table, results_table, startup_table
from bench.scenarios import (
    ALL_TARGETS,
    LABELS,
    PROXY_TARGETS,
    Mode,
    ProxySpec,
    Scenario,
    SetupContext,
    scenarios,
    startup_spawns,
)

WALL_BUDGET_S: dict[str, float] = {"full": 590.0, "quick": 240.0, "smoke": 50.0}
FLOOR_FACTORIES = {
    "aiohttp": "bench.floors:aiohttp_floor",
    "httpx": "bench.floors:httpx_floor",
    "httpx-aiohttp": "bench.floors:httpx_aiohttp_floor",
}
DIRECT_PATH = "/api/v1/chat/completions"
PROXY_PATH = "/v1/chat/completions"
# api -> (path at the fake, path at a floor or the proxy)
PATHS = {
    "chat": (DIRECT_PATH, PROXY_PATH),
    "responses": ("/api/v1/responses", "/v1/responses"),
}
UPSTREAM_KEY = "sk-or-v1-bench"
SETTLE_WINDOW_S = 0.2
SETTLE_MAX_S = 10.0
COUNTERS = (
    "chat_requests", "responses_requests", "ok_requests", "failed_requests", "streams_aborted",
)  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(
        self,
        mode: Mode,
        targets: tuple[str, ...],
        pin: bool,
        proxy_stack: str,
        only: tuple[str, ...] = (),
    ):
        self.mode = mode
        self.only = only  # scenario names to run; empty: all
        self.targets = targets
        self.plan = CpuPlan.detect(pin)
        self.proxy_stack = proxy_stack
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        self.started = time.monotonic()
        self.deadline = self.started + WALL_BUDGET_S[mode]
        self.fake: Server | None = None
        self.servers: dict[str, Server] = {}  # floors, `proxy` and other ProxySpec names
        self.headers: dict[str, dict[str, str]] = {}  # per server: from its ProxySpec setup
        self.extra: list[Server] = []  # per-scenario proxies and cold-start spawns
        self.cells: dict[tuple[str, str], Cell] = {}
        self.startups: dict[str, Startup] = {t: Startup(t) for t in targets if t != "direct"}
        self.problems: list[str] = []
        self.session: aiohttp.ClientSession | None = None
        self.redis: RedisProcess | None = None  # started for the first ProxySpec that asks
        self._db_serial = 0

    # ------------------------------------------------------------ processes

    def _fake_server(self) -> Server:
        port = free_port()
        argv = [
            *self.plan.prefix(self.plan.load), sys.executable, "-m", "bench.fake_upstream",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        return Server("fake", argv, port, clean_env({}), self.tmp)

    def _target_server(self, target: str, proxy_env: dict[str, str] | None = None) -> Server:
        assert self.fake is not None
        port = free_port()
        upstream = f"{self.fake.base_url}/api/v1"
        prefix = self.plan.prefix(self.plan.server)
        if target == "proxy":
            self._db_serial += 1
            env = clean_env(
                {
                    "OPENROUTER_API_KEY": UPSTREAM_KEY,
                    "OPENROUTER_BASE_URL": upstream,
                    "PROXY_DB_PATH": str(self.tmp / f"bench-{self._db_serial}.db"),
                    "PROXY_LOG_LEVEL": "warning",
                    **(proxy_env or {}),
                }
            )
            argv = [*prefix, *self.proxy_argv_prefix(), "serve", "--host", "127.0.0.1",
                    "--port", str(port)]  # fmt: skip
            return Server("proxy", argv, port, env, self.tmp)
        env = clean_env({"BENCH_UPSTREAM_URL": upstream, "OPENROUTER_API_KEY": UPSTREAM_KEY})
        return Server(target, [*prefix, *uvicorn_argv(FLOOR_FACTORIES[target], port)], port,
                      env, self.tmp)  # fmt: skip

    @staticmethod
    def proxy_argv_prefix() -> list[str]:
        return [sys.executable, "-m", "app"]

    async def _start(self, target: str, server: Server, headers: Mapping[str, str] = {}) -> Server:
        healthz_s = await server.start(self.tmp)
        first_chat_s = await self._first_chat(target, server, headers)
        if target in self.startups:
            self.startups[target].healthz_s.append(healthz_s)
            self.startups[target].first_chat_s.append(first_chat_s)
        log(
            f"  {LABELS.get(target, target)}: up in {healthz_s * 1000:.0f} ms "
            f"(first chat {first_chat_s * 1000:.0f} ms), pid {server.pid}, port {server.port}"
        )
        return server

    async def _first_chat(self, target: str, server: Server, headers: Mapping[str, str]) -> float:
        assert self.session is not None and server.proc is not None
        url = server.base_url + (DIRECT_PATH if target == "direct" else PROXY_PATH)
        body = chat_body("bench/ok", stream=False)
        sent = {"Content-Type": "application/json", **headers}
        async with self.session.post(url, data=body, headers=sent) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{target}: first chat answered {resp.status}")
        return time.perf_counter() - server.t0

    async def _server_for(self, target: str) -> Server:
        if target == "direct":
            assert self.fake is not None
            return self.fake
        spec = PROXY_TARGETS.get(target)
        if spec is None:
            return self.servers[target]
        if spec.name not in self.servers:
            await self._start_proxy(spec)
        return self.servers[spec.name]

    async def _start_proxy(self, spec: ProxySpec) -> None:
        """A proxy with the spec's settings; its setup hook runs first, on the same database
        (a key exists before the server starts, as in production)."""
        env = dict(spec.env)
        if spec.redis:
            if self.redis is None:
                # not pinned: on the load generator's busy CPU its answers would wait for
                # time slices (ms), on the proxy's it would take the proxy's time
                self.redis = RedisProcess((), self.tmp)
                log(f"  redis-server: pid {self.redis.proc.pid}, port {self.redis.port}")
            env["PROXY_REDIS_URL"] = self.redis.url
        server = self._target_server("proxy", env)
        self.servers[spec.name] = server  # registered first, so `finally` stops it
        headers: dict[str, str] = {}
        if spec.setup is not None:
            ctx = SetupContext(tuple(self.proxy_argv_prefix()), server.env)
            headers = dict(await spec.setup(ctx))
        self.headers[spec.name] = headers
        await self._start(spec.name, server, headers)

    async def _settle(self) -> None:
        """Wait (at most SETTLE_MAX_S) until the server CPU is idle: a target may still be
        working off the previous cell (usage records, a pool draining timed-out streams).
        Not in --smoke: it checks counts and errors, never timing, and a machine shared with
        other work would make it wait the full time before every cell."""
        if self.plan.server is None or self.mode == "smoke":
            return
        waited = 0.0
        while waited < SETTLE_MAX_S:
            busy0 = cpu_busy_seconds(self.plan.server)
            await asyncio.sleep(SETTLE_WINDOW_S)
            waited += SETTLE_WINDOW_S
            if cpu_busy_seconds(self.plan.server) - busy0 <= 0.1 * SETTLE_WINDOW_S:
                return
        log(f"  (server CPU still busy after {SETTLE_MAX_S:.0f} s; measuring anyway)")

    def _own_cpu(self, server: Server) -> tuple[float, float]:
        """Busy time of (server CPU, load CPU) minus what this benchmark's processes used.

        Differences of two calls give the CPU time other processes took meanwhile (noise).
        """
        assert self.fake is not None
        if self.plan.server is None:
            return (0.0, 0.0)
        ours_load = cpu_seconds(os.getpid()) + cpu_seconds(self.fake.pid)
        ours_server = 0.0 if server is self.fake else cpu_seconds(server.pid)
        return (
            cpu_busy_seconds(self.plan.server) - ours_server,
            cpu_busy_seconds(self.plan.load) - ours_load,
        )

    async def fake_stats(self) -> dict[str, int]:
        assert self.session is not None and self.fake is not None
        async with self.session.get(self.fake.base_url + "/__stats") as resp:
            data: dict[str, int] = await resp.json()
            return data

    # ------------------------------------------------------------ measuring

    async def measure(
        self, sc: Scenario, target: str, server: Server, headers: dict[str, str]
    ) -> None:
        assert self.session is not None and self.fake is not None
        counter = f"{sc.api}_requests"
        cell = self.cells.setdefault((sc.name, target), Cell(sc.name, target, counter=counter))
        if server.proc is None or server.proc.poll() is not None:
            cell.problems.append("server not running")
            return
        path = PATHS[sc.api][0 if target == "direct" else 1]
        spec = LoadSpec(
            url=server.base_url + path,
            body=lambda i: sc.body(target, i),
            stream=sc.stream,
            concurrency=sc.concurrency,
            max_requests=sc.max_requests,
            duration_s=sc.duration_s,
            timeout_s=sc.timeout_s,
            headers=headers,
            api=sc.api,
        )
        slow = sc.name.startswith("slow")
        await self._settle()
        before = await self.fake_stats()
        if slow:
            async with self.session.post(self.fake.base_url + "/__reset_peak") as resp:
                await resp.read()
        sent = 0
        pages = sc.status_pages.get(target, 0)
        async with new_session() as session, contextlib.AsyncExitStack() as watching:
            # open before the warm-up, so the measured part sees them all streaming
            watchers = (
                await watching.enter_async_context(StatusPages(server.base_url, pages))
                if pages
                else None
            )
            if sc.warmup_s > 0:
                warm = await run_load(replace(spec, duration_s=sc.warmup_s), session)
                sent += warm.issued
                if warm.error_count:
                    cell.problems.append(f"warm-up errors {dict(warm.errors)}")
            own = self._own_cpu(server)
            cpu0 = cpu_seconds(server.pid)
            sampler = RssSampler(server.pid).start()
            on_redis = (
                self.redis if target in PROXY_TARGETS and PROXY_TARGETS[target].redis else None
            )
            calls0 = on_redis.calls() if on_redis is not None else (0, 0)
            result = await run_load(spec, session)
            cpu1 = cpu_seconds(server.pid)
            if on_redis is not None:
                calls1 = on_redis.calls()
                cell.redis_commands += calls1[0] - calls0[0]
                cell.redis_scripts += calls1[1] - calls0[1]
                cell.measured += result.issued
            peak = await sampler.stop()
            own_after = self._own_cpu(server)
            if watchers is not None and watchers.errors:
                cell.problems.append(f"status pages: {dict(watchers.errors)}")
        sent += result.issued
        after = await self.fake_stats()
        delta = Counter({k: after[k] - before[k] for k in COUNTERS})
        cell.rounds.append(result)
        cell.cpu_s += cpu1 - cpu0
        for i in (0, 1):
            cell.foreign_cpu_s[i] += max(0.0, (own_after[i] - own[i]))
        cell.peak_rss_kib = max(cell.peak_rss_kib, peak)
        cell.sent += sent
        cell.upstream.update(delta)
        if slow:
            cell.peak_upstream_streams = max(cell.peak_upstream_streams,
                                             after["peak_active_streams"])  # fmt: skip
        if sc.check == "calls" and sc.upstream_calls(target) == 0:
            if cell.upstream[counter] > 1:  # only the request that filled the cache
                cell.problems.append(
                    f"upstream saw {cell.upstream[counter]} {sc.api} requests, expected ≤ 1"
                )
        elif sc.check == "calls":
            expected = sent * sc.upstream_calls(target)
            if delta[counter] != expected:
                cell.problems.append(
                    f"upstream saw {delta[counter]} {sc.api} requests, expected {expected}"
                )
        elif sc.check == "ok":
            if delta["ok_requests"] != sent:
                cell.problems.append(
                    f"upstream served {delta['ok_requests']} requests, expected {sent}"
                )
        want = sc.expect_cache.get(target)
        if want is not None and set(result.cache) - {want}:
            cell.problems.append(f"X-Cache {dict(result.cache)}, expected all {want}")
        if server.proc is not None and server.proc.poll() is not None:
            cell.problems.append(f"server exited with {server.proc.returncode}")
        errs = f", errors {dict(result.errors)}" if result.errors else ""
        log(f"  {sc.name:<22} {LABELS.get(target, target):<24} {result.rps:8.0f} req/s"
            f"  ok {result.ok}{errs}")  # fmt: skip

    async def run_scenario(self, sc: Scenario) -> None:
        # the keyed-proxy targets come with `proxy` (--targets names only the base ones)
        targets: list[str] = [
            t for t in sc.targets
            if t in self.targets or (t in PROXY_TARGETS and "proxy" in self.targets)
        ]  # fmt: skip
        servers: dict[str, Server] = {t: await self._server_for(t) for t in targets}
        headers: dict[str, dict[str, str]] = {
            t: self.headers.get(PROXY_TARGETS[t].name, {}) if t in PROXY_TARGETS else {}
            for t in targets
        }
        log(f"{sc.name}: {sc.what}")
        for r in range(sc.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for target in order:
                if time.monotonic() > self.deadline:
                    self.problems.append(f"{sc.name}/{target}: skipped, wall-time budget spent")
                    return
                await self.measure(sc, target, servers[target], headers[target])

    async def cold_starts(self, spawns: int) -> None:
        for i in range(spawns):
            for target in self.targets:
                if target == "direct":
                    continue
                if time.monotonic() > self.deadline:
                    self.problems.append("cold starts: skipped, wall-time budget spent")
                    return
                server = self._target_server(target)
                self.extra.append(server)
                log(f"cold start {i + 1}/{spawns}:")
                try:
                    await self._start(target, server)
                finally:
                    server.stop()

    # ------------------------------------------------------------ the run

    async def run(self) -> int:
        self.plan.pin_self()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            log(f"bench ({self.mode}): CPU plan {self.plan}, work dir {self.tmp}")
            self.fake = self._fake_server()
            await self._start("direct", self.fake)
            for target in self.targets:
                if target != "direct":
                    # registered before starting, so that `finally` stops it if start fails
                    self.servers[target] = self._target_server(target)
                    await self._start(target, self.servers[target])
            for sc in scenarios(self.mode):
                if not self.only or sc.name in self.only:
                    await self.run_scenario(sc)
            await self.cold_starts(startup_spawns(self.mode))
            for target, server in self.servers.items():
                if target in self.startups:
                    self.startups[target].hwm_kib = hwm_kib(server.pid)
        finally:
            await self.session.close()
            for server in [*self.servers.values(), *self.extra]:
                server.stop()
            if self.fake is not None:
                self.fake.stop()
            if self.redis is not None:
                self.redis.stop()
        return 0

    def report(self) -> str:
        order = list(dict.fromkeys(s for s, _ in self.cells))
        versions = {"python": platform.python_version()}
        for dist in ("uvicorn", "starlette", "aiohttp", "httpx", "httpx-aiohttp", "uvloop"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "?"
        parts = [
            f"## bench run: {self.mode}, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{time.monotonic() - self.started:.0f} s",
            "",
            f"CPU plan: servers on {self.plan.server}, fake + load generator on "
            f"{self.plan.load}. " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            "",
            "req/s: median of rounds; latencies and TTFT: pooled over rounds; +p50/+p99/"
            "+TTFT: target minus direct; CPU ms/req: the server process (direct: the fake); "
            "spread: (max - min) / median req/s over rounds; noise: CPU time other processes "
            "took on the server CPU / the load CPU while measuring (shown above 5 %).",
            "",
            results_table(self.cells, order),
            "",
            "### Start-up",
            "",
            startup_table(self.startups),
        ]
        if "proxy" in self.targets and self.mode != "smoke":
            parts += ["", "### Budget (DESIGN §9, issues 12, 17-19, 25, 27, 28)", "",
                      budget_table(self.cells, self.startups, self.proxy_stack)]  # fmt: skip
        return "\n".join(parts)

    def failures(self) -> list[str]:
        out = list(self.problems)
        for cell in self.cells.values():
            label = f"{cell.scenario}/{cell.target}"
            # A floor that breaks under load (httpx's own pool with 1,000 streams) is a
            # finding for the table, not a failure of the run; in --smoke every error counts.
            if cell.errors and (self.mode == "smoke" or cell.target in ("direct", "proxy")):
                out.append(f"{label}: errors {dict(cell.errors)}")
            out.extend(f"{label}: {p}" for p in cell.problems)
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "cells": [c.as_json() for c in self.cells.values()],
            "startups": {k: vars(v) for k, v in self.startups.items()},
            "problems": self.failures(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="openrouter-proxy benchmarks")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="one short round per scenario")
    group.add_argument("--smoke", action="store_true", help="few requests, checks only")
    parser.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma list out of {','.join(ALL_TARGETS)} (default: all)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--proxy-stack",
        default="aiohttp",  # the proxy talks raw aiohttp (app/upstream/transport.py)
        choices=["aiohttp", "httpx", "httpx-aiohttp"],
        help="the floor that uses the proxy's own client stack (for the 50 %% budget line)",
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma list of scenario names to run, e.g. 'status pages c=10' (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "direct" not in targets:
        targets = ("direct", *targets)
    if "proxy" in targets and not (REPO / "app" / "cli.py").exists():
        parser.error("the proxy (app/cli.py) is missing; leave `proxy` out of --targets")
    only = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
    unknown_scenarios = set(only) - {sc.name for sc in scenarios(mode)}
    if unknown_scenarios:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown_scenarios))}")
    bench = Bench(mode, targets, pin=not args.no_pin, proxy_stack=args.proxy_stack, only=only)
    try:
        import uvloop

        uvloop.run(bench.run())
    except RuntimeError as exc:
        bench.problems.append(f"aborted: {exc}")
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if args.json:  # first: a report that cannot be printed must not lose the measurements
        args.json.write_text(json.dumps(bench.as_json(), indent=2, default=str))
    print(bench.report(), flush=True)
    failures = bench.failures()
    if failures:
        print("\nFAILED:\n" + "\n".join(f"- {f}" for f in failures), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
