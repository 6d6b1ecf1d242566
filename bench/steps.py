"""Where one request's CPU goes, step by step (issue 28): parse, auth, candidates, quota,
cache, upstream call set-up, the call itself, relay, trace and metrics, usage record.

    python -m bench.steps            # five configurations, about 2 minutes
    python -m bench.steps --quick    # short rounds, under a minute: a smoke that all of it runs
    python -m bench.steps --configs proxy,floor --unclassified 15
    python -m bench.steps --json steps.json

Configurations: `proxy` (open mode), `key` (a client key with every limit set), `key-miss`
(the key, temperature 0 and every body different: a cache lookup, miss and store each),
`key-redis` (the key with its state in a throwaway redis-server; skipped when there is
none) and `floor` (`bench.floors:aiohttp_floor`, Starlette + raw aiohttp). As in
`bench.scenarios`, every request of a run has a different body (`unique_body`).

Each configuration runs in a fresh process (pinned to the first CPU; the fake OpenRouter
and py-spy to the second) that builds the app in-process and calls its ASGI callable
directly, 10 requests at a time, with no HTTP server: uvicorn's parsing and socket writes
are left out, the same for the proxy and the floor. After the lifespan has started (and
`heap.settle()`, as the server does) and a warm-up, it measures
1. CPU per request without a profiler: `time.process_time()` (every thread) over rounds of
   requests, the median round;
2. a sampling profile of the same load: `py-spy record --pid <self> -r 1000 --gil` (py-spy
   pauses the process for each sample, so the stacks are whole; `--gil` keeps only the
   samples of the thread running Python, so idle waits never count). Every sample of the
   main thread goes to the step of the INNERMOST frame of its stack that a rule below names
   (so a Redis round trip inside the quota check counts as quota), or else to "HTTP frame
   and the rest". A step's µs per request is its share of those samples times the main
   thread's CPU per request (`time.thread_time()`); the other threads' CPU (process minus
   main thread) is the usage writer's SQLite batches, counted under "usage record" (their
   samples are classified too, as a check, on stderr).

Progress goes to stderr, the markdown table to stdout. Needs py-spy (the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import REPO, CpuPlan, RedisProcess, Server, clean_env, free_port
from bench.scenarios import SetupContext, bench_key, unique_body

CONCURRENCY = 10
PATH = "/v1/chat/completions"
CONFIGS = ("proxy", "key", "key-miss", "key-redis", "floor")
EXPECTED_CACHE = {"proxy": "BYPASS", "key": "BYPASS", "key-miss": "MISS", "key-redis": "BYPASS"}

INTAKE, AUTH, CANDIDATES, QUOTA = "intake and parse", "auth", "candidates", "quota"
CACHE, SETUP, UPSTREAM = "cache status and key", "upstream call set-up", "upstream call (aiohttp)"
RELAY, TRACE, USAGE = "relay", "trace and metrics", "usage record"
FALLBACK, GLUE, REST = "fallback walk", "pipeline's own lines", "HTTP frame and the rest"
REDIS = "Redis client in a task of its own (step unknown)"
STEPS = (INTAKE, AUTH, CANDIDATES, QUOTA, CACHE, SETUP, UPSTREAM, RELAY, TRACE, USAGE,
         FALLBACK, GLUE, REDIS, REST)  # fmt: skip
FLOOR_STEPS = (UPSTREAM, REST)  # the floor has no steps: its framework, and the call

# app/ file -> {qualified function name, "Class.*" or "*" for any: step}. What a named
# function calls (Starlette's body reading, orjson, the store behind a protocol) counts to
# it, unless a rule names the inner frame too (the budget's active-key mark inside
# `authenticate`). A frame's own samples include passing a resumed await chain through it.
RULES: dict[str, dict[str, str]] = {
    "api/intake.py": {"read_body": INTAKE, "read_headers": INTAKE, "request_id_for": INTAKE,
                      "forwarded_headers": SETUP},
    "api/chat.py": {"ChatDialect.parse": INTAKE, "ChatDialect.check_answer": RELAY,
                    "ChatDialect.usage": RELAY},
    "api/dialect.py": {"openai_usage": RELAY, "*": INTAKE},
    "api/pipeline.py": {"Flow.__init__": INTAKE, "Flow._named": CANDIDATES,
                        "Flow._forwarded": SETUP, "Flow._answer": RELAY, "Flow._headers": RELAY,
                        "Flow._hit": RELAY, "Flow._stream": RELAY,
                        "Flow._timed.<locals>.timed": TRACE, "*": GLUE},
    "api/disconnect.py": {"*": GLUE},
    "api/routes.py": {"*": REST},
    "api/stream_end.py": {"spend_tokens": QUOTA},
    "team/gate.py": {"Gate.authenticate": AUTH, "Gate.allowed": CANDIDATES,
                     "Gate.may_use": CANDIDATES, "*": QUOTA},
    "team/budget.py": {"*": QUOTA}, "shared/budget.py": {"*": QUOTA},
    "shared/twins.py": {"FailoverCache.*": CACHE, "FailoverLeases.*": CACHE,
                        "FailoverCooldowns.*": FALLBACK, "*": QUOTA},  # quotas, budget
    "team/quotas.py": {"*": QUOTA}, "shared/quotas.py": {"*": QUOTA},
    "routing/candidates.py": {"Router.candidates": CANDIDATES},
    "cache/step.py": {"*": CACHE}, "cache/key.py": {"*": CACHE}, "cache/flight.py": {"*": CACHE},
    "cache/store.py": {"*": CACHE}, "shared/cache.py": {"*": CACHE},
    "routing/attempts.py": {"Attempts.longest": CACHE, "*": FALLBACK},
    "routing/selector.py": {"*": FALLBACK}, "routing/cooldowns.py": {"*": FALLBACK},
    "routing/recording.py": {"*": FALLBACK}, "shared/cooldowns.py": {"*": FALLBACK},
    "upstream/client.py": {"OpenRouterClient._start": SETUP, "OpenRouterClient._headers": SETUP,
                           "OpenRouterClient._headers_for": SETUP,
                           "OpenRouterClient._send": SETUP, "OpenRouterClient._request": SETUP,
                           "*": RELAY},
    "upstream/deadlines.py": {"Deadline.start": SETUP, "*": RELAY},
    "upstream/transport.py": {"*": UPSTREAM},
    "upstream/reading.py": {"*": RELAY}, "upstream/relay.py": {"*": RELAY},
    "api/trace.py": {"Trace._record": USAGE, "*": TRACE},
    "metrics.py": {"*": TRACE}, "status/activity.py": {"*": TRACE}, "request_log.py": {"*": TRACE},
    "team/usage.py": {"*": USAGE}, "team/sqlite_stores.py": {"*": USAGE},
    "team/stores.py": {"*": USAGE},
}  # fmt: skip
# Libraries only the upstream client uses: the event loop's callbacks into aiohttp's parser
# (no app frame above them) count there too.
LIBRARIES = ("/aiohttp/", "/yarl/", "/multidict/", "/aiohappyeyeballs/", "/propcache/")
APP_DIR = str(REPO / "app") + "/"
IDLE_WORKER = "_worker ("  # concurrent.futures' pool thread, waiting on its queue


@dataclass(frozen=True)
class Timing:
    """Seconds of wall time per phase (the request counts follow from the warm-up's rate)."""

    warm_s: float
    rounds: int
    round_s: float
    profile_s: float
    rate: int = 1000  # samples a second


FULL = Timing(warm_s=1.0, rounds=9, round_s=1.0, profile_s=8.0)
QUICK = Timing(warm_s=0.3, rounds=2, round_s=0.3, profile_s=1.5)


@dataclass
class ChildResult:
    config: str
    us: list[float]  # CPU µs per request, every thread, one per round (no profiler)
    main_us: list[float]  # of which the main thread's (the event loop)
    requests: int  # measured without the profiler
    main: dict[str, int] = field(default_factory=dict)  # step -> samples of the main thread
    other: dict[str, int] = field(default_factory=dict)  # step -> samples of other threads
    profiled_us: float = 0.0  # CPU µs per request while sampled
    profiled_requests: int = 0
    dropped: int = 0  # samples without a stack, or of an idle pool thread
    unclassified: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total_us(self) -> float:
        return statistics.median(self.us)

    @property
    def other_us(self) -> float:
        return statistics.median(u - m for u, m in zip(self.us, self.main_us, strict=True))

    def step_us(self, step: str) -> float:
        """The main thread's CPU per request times the step's share of its samples; the
        other threads' CPU is the usage writer's (its SQLite batches on the pool's threads:
        `other` shows where their samples fell)."""
        share = self.main.get(step, 0) / (sum(self.main.values()) or 1)
        return (self.total_us - self.other_us) * share + (self.other_us if step == USAGE else 0.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ classifying samples


def step_of(frame: str, floor: bool) -> str | None:
    """The step a py-spy frame ("qualname (path)", no line numbers) names, if any."""
    name, _, path = frame.rpartition(" (")
    path = path.rstrip(")")
    if any(lib in path for lib in LIBRARIES):
        return UPSTREAM
    if floor or not path.startswith(APP_DIR):
        return None
    rule = RULES.get(path[len(APP_DIR) :])
    if rule is None:
        return None
    return rule.get(name) or rule.get(name.partition(".")[0] + ".*") or rule.get("*")


@dataclass
class Samples:
    main: Counter[str] = field(default_factory=Counter)  # step -> samples, main thread
    other: Counter[str] = field(default_factory=Counter)  # step -> samples, other threads
    rest: Counter[str] = field(default_factory=Counter)  # "the rest" by innermost frame
    dropped: int = 0


def classify(raw: str, floor: bool, main_tid: int) -> Samples:
    """py-spy's raw output recorded with --threads (`thread (tid)[: name];outer;...;inner
    count` a line) by thread and step. A sample with no Python frame (a torn read) or of a
    pool thread waiting for work (py-spy's idle test misses some) is dropped."""
    out = Samples()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE_WORKER):
            out.dropped += int(count)
            continue
        step = next(filter(None, (step_of(f, floor) for f in reversed(frames))), None)
        if step is None:
            # redis-py sends each command under `asyncio.wait_for`, a task of its own (3.11)
            step = REDIS if any("/redis/" in f for f in frames) else REST
        main = thread.partition(")")[0] == f"thread ({main_tid}"
        (out.main if main else out.other)[step] += int(count)
        if step == REST:
            out.rest[frames[-1]] += int(count)
    return out


# ------------------------------------------------------------------ the measured process


class Driver:
    """Calls the ASGI app directly: `CONCURRENCY` workers, one synthetic request each."""

    def __init__(self, app: Any, config: str, auth: str | None) -> None:
        self.app = app
        self.body = unique_body({"key-miss": 0.0})
        self.config = config
        self.head = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                     (b"user-agent", b"bench"), (b"accept", b"*/*")]  # fmt: skip
        if auth is not None:
            self.head.append((b"authorization", auth.encode()))
        self.expect = EXPECTED_CACHE.get(config, "").encode()

    def bodies(self, n: int) -> list[bytes]:
        return [self.body(self.config, i) for i in range(n)]

    async def one(self, body: bytes, check: bool) -> None:
        headers = [*self.head, (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "server": ("127.0.0.1", 8080),
                 "client": ("127.0.0.1", 5555), "scheme": "http", "method": "POST",
                 "root_path": "", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
                 "headers": headers, "state": {}}  # fmt: skip
        sent = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()  # a client that stays: uvicorn's receive waits the same way
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] != "http.response.start":
                return
            if message["status"] != 200:
                raise RuntimeError(f"{self.config}: answered {message['status']}")
            if check and self.expect and (b"x-cache", self.expect) not in message["headers"]:
                raise RuntimeError(f"{self.config}: X-Cache is not {self.expect.decode()}")

        await self.app(scope, receive, send)

    async def run(self, bodies: list[bytes], until: float = math.inf) -> tuple[float, float, int]:
        """CPU seconds to answer `bodies` (or those begun before monotonic `until`): this
        process's (every thread), the main thread's; and how many were answered."""
        it = iter(bodies)
        done = 0

        async def worker() -> None:
            nonlocal done
            for body in it:
                await self.one(body, False)
                done += 1
                if time.monotonic() > until:
                    return

        t0, m0 = time.process_time(), time.thread_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.process_time() - t0, time.thread_time() - m0, done

    async def warm(self, seconds: float) -> float:
        """Requests for `seconds` of wall time (X-Cache checked); their rate a second."""
        until = time.monotonic() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < until:
                await self.one(self.body(self.config, done), True)
                done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / seconds


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> Any:
    incoming: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, incoming.get, outgoing.put))
    started = await outgoing.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan: {started}")
    try:
        yield
    finally:
        await incoming.put({"type": "lifespan.shutdown"})
        await outgoing.get()
        await task


def make_app(config: str) -> Any:
    if config == "floor":
        from bench.floors import aiohttp_floor

        return aiohttp_floor()
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings())


def settle() -> None:
    """What the server does once its start-up is done, when this version has it."""
    try:
        from app.server import heap
    except ImportError:
        return
    heap.settle()


async def sampled(
    driver: Driver, bodies: list[bytes], args: argparse.Namespace
) -> tuple[float, str, int]:
    """CPU seconds a request while py-spy samples this process, its raw output, and how
    many requests it sampled."""
    out = Path(args.out).with_suffix(".raw")
    argv = [*args.spy_prefix, args.py_spy, "record", "--pid", str(os.getpid()),
            "--rate", str(args.timing.rate), "--format", "raw", "--threads", "--full-filenames",
            "--nolineno", "--gil", "--output", str(out)]  # fmt: skip
    spy = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert spy.stdout is not None
    seen = b""
    while b"Sampling" not in seen:  # "py-spy> Sampling process 1000 times a second..."
        line = await asyncio.wait_for(spy.stdout.readline(), 20)
        if not line:
            raise RuntimeError(f"py-spy did not start: {seen.decode(errors='replace')}")
        seen += line
    # py-spy's pauses slow the process down (2-8x here): the wall time is bounded instead
    cpu, _, done = await driver.run(bodies, time.monotonic() + args.timing.profile_s)
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    _, err = await asyncio.wait_for(spy.communicate(), 60)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')}")
    return cpu / done, out.read_text(), done


async def child(args: argparse.Namespace) -> None:
    config, timing = args.child, args.timing
    app = make_app(config)
    async with lifespan(app):
        settle()
        driver = Driver(app, config, args.auth)
        rate = await driver.warm(timing.warm_s)
        per_round = max(100, int(rate * timing.round_s))
        us: list[float] = []
        main_us: list[float] = []
        for _ in range(timing.rounds):
            cpu, main, _ = await driver.run(driver.bodies(per_round))
            us.append(cpu / per_round * 1e6)
            main_us.append(main / per_round * 1e6)
        profiled = driver.bodies(max(200, int(rate * timing.profile_s)))
        cpu, raw, sampled_requests = await sampled(driver, profiled, args)
    found = classify(raw, config == "floor", threading.main_thread().native_id or os.getpid())
    result = ChildResult(config, us, main_us, per_round * timing.rounds, dict(found.main),
                         dict(found.other), cpu * 1e6, sampled_requests,
                         found.dropped, found.rest.most_common(args.unclassified))  # fmt: skip
    Path(args.out).write_text(json.dumps(asdict(result)))


def child_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(child(args))


# ------------------------------------------------------------------ the runner

LABELS = {"proxy": "open mode (`proxy`)", "key": "key (`key`)",
          "key-miss": "key, cache miss (`key-miss`)", "key-redis": "key, Redis (`key-redis`)",
          "floor": "floor (Starlette + aiohttp)"}  # fmt: skip
UPSTREAM_KEY = "sk-or-v1-bench"
CHILD_TIMEOUT_S = 150.0


def find_py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: pip install -e '.[bench]' (or pip install py-spy)")
    return found


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = CpuPlan.detect(not args.no_pin)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-steps-"))
        self.py_spy = find_py_spy()
        self.redis: RedisProcess | None = None
        self.skipped: list[str] = []

    async def run(self, configs: list[str]) -> dict[str, ChildResult]:
        port = free_port()
        argv = [*self.plan.prefix(self.plan.load), sys.executable, "-m", "bench.fake_upstream",
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        fake = Server("fake", argv, port, clean_env({}), self.tmp)
        results: dict[str, ChildResult] = {}
        try:
            await fake.start(self.tmp)
            log(f"fake OpenRouter: pid {fake.pid}, port {port}; CPUs {self.plan}")
            for config in configs:
                result = await self.measure(config, f"{fake.base_url}/api/v1")
                if result is not None:
                    results[config] = result
        finally:
            fake.stop()
            if self.redis is not None:
                self.redis.stop()
        return results

    async def measure(self, config: str, upstream: str) -> ChildResult | None:
        env = clean_env({"OPENROUTER_API_KEY": UPSTREAM_KEY, "OPENROUTER_BASE_URL": upstream,
                         "BENCH_UPSTREAM_URL": upstream, "PROXY_LOG_LEVEL": "warning",
                         "PROXY_DB_PATH": str(self.tmp / f"{config}.db")})  # fmt: skip
        if config == "key-redis":
            if shutil.which("redis-server") is None:
                self.skipped.append("key-redis: no redis-server (apt-get install redis-server)")
                log(f"skipped {self.skipped[-1]}")
                return None
            # not pinned, as in bench.run: on either busy CPU its answers wait for time slices
            self.redis = self.redis or RedisProcess((), self.tmp)
            env["PROXY_REDIS_URL"] = self.redis.url
        if config.startswith("key"):
            headers = await bench_key(SetupContext((sys.executable, "-m", "app"), env))
            env["BENCH_STEPS_AUTH"] = headers["Authorization"]
        out = self.tmp / f"{config}.json"
        argv = [*self.plan.prefix(self.plan.server), sys.executable, "-m", "bench.steps",
                "--child", config, "--out", str(out), "--py-spy", self.py_spy,
                "--unclassified", str(self.args.unclassified)]  # fmt: skip
        if self.plan.load is not None:
            argv += ["--spy-cpu", str(self.plan.load)]
        if self.args.quick:
            argv.append("--quick")
        log(f"{config}: measuring ...")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=self.tmp)
        try:
            code = await asyncio.wait_for(proc.wait(), CHILD_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{config}: no result after {CHILD_TIMEOUT_S:.0f} s") from None
        if code != 0:
            raise RuntimeError(f"{config}: the measuring process exited with {code}")
        result = ChildResult(**json.loads(out.read_text()))
        other = sum(result.other.values())
        log(f"{config}: {result.total_us:.0f} µs/request (rounds "
            f"{', '.join(f'{u:.0f}' for u in result.us)}; other threads {result.other_us:.1f}), "
            f"{sum(result.main.values())} samples of the main thread, {other} of others "
            f"({result.other.get(USAGE, 0)} in the usage writer's frames), "
            f"{time.monotonic() - started:.0f} s")  # fmt: skip
        for frame, count in result.unclassified:
            log(f"    rest: {count:6d}  {frame}")
        return result


def cell(result: ChildResult, step: str) -> str:
    if result.config == "floor" and step not in FLOOR_STEPS:
        return "–"
    return f"{result.step_us(step):.1f}"


def table(results: dict[str, ChildResult]) -> str:
    cols = list(results.values())

    def row(name: str, cells: Iterable[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [
        row("step (CPU µs per request)", (LABELS[r.config] for r in cols)),
        "|---|" + "---:|" * len(cols),
        *(row(step, (cell(r, step) for r in cols)) for step in STEPS),
        row("**total** (no profiler, median round)", (f"**{r.total_us:.0f}**" for r in cols)),
        row("rounds, min–max", (f"{min(r.us):.0f}–{max(r.us):.0f}" for r in cols)),
        row("of which other threads", (f"{r.other_us:.1f}" for r in cols)),
        row("samples, main + other threads",
            (f"{sum(r.main.values())} + {sum(r.other.values())}" for r in cols)),
        row("CPU µs per request under py-spy", (f"{r.profiled_us:.0f}" for r in cols)),
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (a smoke)")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS)
    )
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--json", help="write every number to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (py-spy's raw profiles)"
    )
    parser.add_argument(
        "--unclassified",
        type=int,
        default=0,
        help="show the N commonest innermost frames of 'the rest' (stderr)",
    )
    # the measured process
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--py-spy", default="py-spy", help=argparse.SUPPRESS)
    parser.add_argument("--spy-cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.auth = os.environ.get("BENCH_STEPS_AUTH")
        args.timing = QUICK if args.quick else FULL
        args.spy_prefix = [] if args.spy_cpu is None else ["taskset", "-c", str(args.spy_cpu)]
        child_main(args)
        return
    configs = [c for c in args.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configurations {sorted(unknown)}")
    load = os.getloadavg()[0]
    started = time.monotonic()
    runner = Runner(args)
    try:
        results = asyncio.run(runner.run(configs))
    finally:
        if args.keep:
            log(f"work directory kept: {runner.tmp}")
        else:
            shutil.rmtree(runner.tmp, ignore_errors=True)
    print(table(results))
    print()
    print(
        f"In-process, {CONCURRENCY} concurrent requests, no HTTP server (uvicorn's parsing and "
        f"socket writes left out, for the proxy and the floor alike); load average {load:.2f} "
        f"→ {os.getloadavg()[0]:.2f}; {time.monotonic() - started:.0f} s."
    )
    for line in runner.skipped:
        print(f"Skipped {line}.")
    if args.json:
        Path(args.json).write_text(json.dumps({c: asdict(r) for c, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
