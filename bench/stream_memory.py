"""`python -m bench.stream_memory`: memory per open stream (issue 28, DESIGN §9).

For each prompt size (a small chat request, and one whose user message is 200 KB), a
fresh proxy process opens 1,000 streams at once against the bench fake, which holds each
one open (`bench/slow-N`, a chunk a second). A stream counts as open once its response
head has arrived: the proxy sends it only after the first content, when no other attempt
is possible any more (committed). Measured per prompt size:

- peak RSS of the proxy while the 1,000 streams open and while they are held (VmRSS every
  50 ms, and VmHWM at the end): DESIGN §9's ≤ 100 MiB (small) and ≤ 150 MiB (200 KB);
- RSS per open stream: (VmRSS with every stream open − VmRSS before) / 1,000;
- Python bytes per open stream, by tracemalloc, in a second fresh proxy that traces its
  allocations from just before the streams open (`serve-traced` below; tracing itself
  costs memory, so RSS is not read there): bytes allocated since and still held, after a
  `gc.collect()`, / 1,000; and the peak of those bytes while the streams opened.

Processes as in `python -m bench.run`: `python -m app serve` with the runner's settings
(open mode, defaults), pinned to the first CPU; the fake and this process (the clients) to
the second. `--batch N` opens them N at a time (each batch once the last has opened), so
the figures show what open streams hold without the burst of 1,000 requests read at once;
`--floor` adds bench/floors.py's aiohttp pass-through (RSS only); `--top N` prints the N
allocation sites holding most while the streams are open (`--frames` deep).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.loadgen import chat_body, new_session, stop_readers
from bench.procs import (
    CpuPlan,
    RssSampler,
    Server,
    clean_env,
    free_port,
    hwm_kib,
    rss_kib,
    uvicorn_argv,
)

STREAMS = 1000
HOLD_MS = 120_000  # the fake's hold; the clients leave once measured
BIG_PROMPT_BYTES = 200 * 1024
SETTLE_S = 1.0  # after the last stream opened, before reading memory
OPEN_TIMEOUT_S = 100.0  # deep tracing (--frames) is slow
MIB = 1024 * 1024


def big_body(size: int = BIG_PROMPT_BYTES) -> bytes:
    """A chat request whose user message is `size` bytes of prose with line breaks, as a
    pasted document is: escapes make the JSON text differ from the parsed string."""
    line = 'The quick brown fox jumps over the lazy dog; "quoted" and plain words.\n'
    text = (line * (size // len(line) + 1))[:size]
    return chat_body(f"bench/slow-{HOLD_MS}", stream=True, messages=[
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": text},
    ])  # fmt: skip


@dataclass
class Measured:
    target: str
    prompt: str
    body_bytes: int
    opened: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    peak_rss_kib: int = 0
    rss_before_kib: int = 0
    rss_open_kib: int = 0
    traced_per_stream: float | None = None
    traced_peak: int = 0  # Python bytes at most, while the streams opened
    top: list[str] = field(default_factory=list)

    @property
    def rss_per_stream_kib(self) -> float:
        return (self.rss_open_kib - self.rss_before_kib) / max(self.opened, 1)


class Streams:
    """`n` streams opened with `body`, all at once or `batch` at a time (each batch once
    the last has opened); each is read, and so held, until closed."""

    def __init__(self, url: str, body: bytes, n: int, batch: int = 0) -> None:
        self.url, self.body, self.n, self.batch = url, body, n, batch or n
        self.opened = 0
        self.errors: dict[str, int] = {}
        self.all_open = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Streams:
        self._session = new_session()
        while len(self._tasks) < self.n:
            more = min(self.batch, self.n - len(self._tasks))
            self._tasks += [asyncio.ensure_future(self._one(self._session)) for _ in range(more)]
            while len(self._tasks) < self.n and not self._done(len(self._tasks)):
                await asyncio.sleep(0.005)  # the next batch once this one has opened
        return self

    def _done(self, count: int) -> bool:
        return self.opened + sum(self.errors.values()) >= count

    def _settled(self) -> None:
        if self._done(self.n):
            self.all_open.set()

    async def _one(self, session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            async with session.post(self.url, data=self.body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                self.opened += 1
                self._settled()
                while await resp.content.readany():
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted, shown in the table
            name = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            self._settled()

    async def __aexit__(self, *_: object) -> None:
        await stop_readers(self._tasks, self._session)


class Bench:
    def __init__(self, plan: CpuPlan, tmp: Path, args: argparse.Namespace) -> None:
        self.plan, self.tmp, self.top, self.frames = plan, tmp, args.top, args.frames
        self.prompts, self.floor, self.batch = args.prompts, args.floor, args.batch
        self.fake: Server | None = None
        self.serial = 0

    def _server(self, kind: str) -> Server:
        """`proxy` as `bench.run` starts it, `traced` the same tracing its allocations, or
        `floor`: bench/floors.py's Starlette + aiohttp pass-through, for comparison."""
        assert self.fake is not None
        port, self.serial = free_port(), self.serial + 1
        prefix, upstream = self.plan.prefix(self.plan.server), f"{self.fake.base_url}/api/v1"
        if kind == "floor":
            env = clean_env(
                {"BENCH_UPSTREAM_URL": upstream, "OPENROUTER_API_KEY": "sk-or-v1-bench"}
            )
            argv = [*prefix, *uvicorn_argv("bench.floors:aiohttp_floor", port)]
            return Server("floor", argv, port, env, self.tmp)
        env = clean_env({
            "OPENROUTER_API_KEY": "sk-or-v1-bench",
            "OPENROUTER_BASE_URL": upstream,
            "PROXY_DB_PATH": str(self.tmp / f"memory-{self.serial}.db"),
            "PROXY_LOG_LEVEL": "warning",
        })  # fmt: skip
        entry = ["bench.stream_memory", "serve-traced", "--frames", str(self.frames)]
        module = entry if kind == "traced" else ["app", "serve"]
        argv = [*prefix, sys.executable, "-m", *module,
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        return Server(kind, argv, port, env, self.tmp)

    async def _quiet_upstream(self, session: aiohttp.ClientSession) -> None:
        """Wait until the fake holds no stream: the last run's have all ended."""
        assert self.fake is not None
        for _ in range(200):
            async with session.get(self.fake.base_url + "/__stats") as resp:
                if orjson.loads(await resp.read())["active_streams"] == 0:
                    return
            await asyncio.sleep(0.05)

    async def measure(self, body: bytes, kind: str, into: Measured) -> None:
        proxy, traced = self._server(kind), kind == "traced"
        url = proxy.base_url + "/v1/chat/completions"
        try:
            await proxy.start(self.tmp)
            async with new_session() as session:
                await self._quiet_upstream(session)
                warm = chat_body("bench/ok", stream=True)  # the stream path's first use
                async with session.post(url, data=warm) as resp:
                    await resp.read()
                memory = proxy.base_url + "/__memory"
                if traced:
                    await _ask(session, memory + "?base=1")
                await asyncio.sleep(SETTLE_S)
                before = rss_kib(proxy.pid)
                sampler = RssSampler(proxy.pid).start()
                async with Streams(url, body, STREAMS, self.batch) as streams:
                    try:
                        await asyncio.wait_for(streams.all_open.wait(), OPEN_TIMEOUT_S)
                    except TimeoutError:
                        streams.errors["not open in time"] = STREAMS - streams.opened
                    await asyncio.sleep(SETTLE_S)
                    into.opened, into.errors = streams.opened, dict(streams.errors)
                    if traced:
                        seen = await _ask(session, f"{memory}?top={self.top}")
                        into.traced_per_stream = seen["grown"] / max(streams.opened, 1)
                        into.top, into.traced_peak = seen["top"], seen["peak"]
                    else:
                        into.rss_before_kib, into.rss_open_kib = before, rss_kib(proxy.pid)
                peak = max(await sampler.stop(), hwm_kib(proxy.pid))
                if not traced:
                    into.peak_rss_kib = peak
                await self._quiet_upstream(session)
        finally:
            proxy.stop()

    async def run(self) -> list[Measured]:
        fake_port = free_port()
        argv = [*self.plan.prefix(self.plan.load), sys.executable, "-m", "bench.fake_upstream",
                "--host", "127.0.0.1", "--port", str(fake_port)]  # fmt: skip
        self.fake = Server("fake", argv, fake_port, clean_env({}), self.tmp)
        results: list[Measured] = []
        try:
            await self.fake.start(self.tmp)
            small = chat_body(f"bench/slow-{HOLD_MS}", stream=True)
            for prompt, body in (("small", small), ("200 KB", big_body())):
                if self.prompts not in ("both", prompt.replace(" ", "").lower()):
                    continue
                measured = Measured("proxy", prompt, len(body))
                for kind in ("proxy", "traced"):
                    started = time.monotonic()
                    await self.measure(body, kind, measured)
                    log(f"{prompt}, {kind}: {time.monotonic() - started:.0f} s")
                results.append(measured)
                if self.floor:
                    results.append(Measured("floor aiohttp", prompt, len(body)))
                    await self.measure(body, "floor", results[-1])
                    log(f"{prompt}, floor: done")
        finally:
            self.fake.stop()
        return results


async def _ask(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return orjson.loads(await resp.read())


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def report(results: list[Measured], batch: int) -> str:
    opened = f"{batch} at a time" if batch else "at once"
    lines = [
        f"{STREAMS:,} streams opened {opened}, held open by the fake (`bench/slow-{HOLD_MS}`).",
        "",
        "| target | prompt | body bytes | open | peak RSS MiB | RSS before → open MiB "
        "| RSS per open stream KiB | Python bytes per open stream KiB | Python peak MiB "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        traced = m.traced_per_stream is not None
        per_stream = f"{m.traced_per_stream / 1024:.1f}" if traced else "–"
        peak = f"{m.traced_peak / MIB:.1f}" if traced else "–"
        lines.append(
            f"| {m.target} | {m.prompt} | {m.body_bytes:,} | {m.opened} "
            f"| {m.peak_rss_kib / 1024:.1f} "
            f"| {m.rss_before_kib / 1024:.1f} → {m.rss_open_kib / 1024:.1f} "
            f"| {m.rss_per_stream_kib:.1f} | {per_stream} | {peak} | {m.errors or 0} |"
        )
    for m in results:
        if m.top:
            lines += ["", f"Allocation sites holding most with {m.prompt} prompts open:", "```"]
            lines += [*m.top, "```"]
    return "\n".join(lines)


def serve_traced(argv: list[str]) -> None:
    """`python -m app serve`, answering GET /__memory: `?base=1` starts tracing
    allocations (so start-up runs untraced and at full speed), later calls say how many
    traced bytes are still held (`grown`) and, with `?top=N`, the N sites holding most."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1)
    args, rest = parser.parse_known_args(argv)
    from starlette.requests import Request
    from starlette.responses import Response

    import app.main
    from app.cli import main as cli_main

    create_app = app.main.create_app

    async def memory(request: Request) -> Response:
        gc.collect()
        if request.query_params.get("base"):
            tracemalloc.start(args.frames)
            return Response(b"{}", media_type="application/json")
        top = int(request.query_params.get("top", "0"))
        grown, peak = tracemalloc.get_traced_memory()
        group = "traceback" if args.frames > 1 else "lineno"
        stats = tracemalloc.take_snapshot().statistics(group)[:top] if top else []
        body = {"grown": grown, "peak": peak, "top": [_site(stat) for stat in stats]}
        return Response(orjson.dumps(body), media_type="application/json")

    def traced_app(*a: Any, **kw: Any) -> Any:
        served = create_app(*a, **kw)
        served.add_route("/__memory", memory, methods=["GET"])
        return served

    app.main.create_app = traced_app  # cli's `serve` imports it when it runs
    cli_main(["serve", *rest])


def _site(stat: tracemalloc.Statistic) -> str:
    where = " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in stat.traceback)
    return f"{stat.size / STREAMS:8.0f} B/stream {stat.count:7d} blocks  {where}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-traced"]:
        serve_traced(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--top", type=int, default=0, help="print the N sites that grew most")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per site")
    parser.add_argument("--prompts", choices=("both", "small", "200kb"), default="both")
    parser.add_argument("--floor", action="store_true", help="also the aiohttp floor (RSS)")
    parser.add_argument("--batch", type=int, default=0, help="open N at a time (0: all at once)")
    args = parser.parse_args(argv)
    plan = CpuPlan.detect(not args.no_pin)
    plan.pin_self()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        results = asyncio.run(Bench(plan, Path(tmp), args).run())
    print(report(results, args.batch))
    if any(m.errors or m.opened < STREAMS for m in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
