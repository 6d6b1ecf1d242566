"""The hot-path cost of metrics (DESIGN §9, §11): what one request adds by being counted.

    python -m bench.metrics_cost

Times, per request, the calls the pipeline makes: one attempt recorded, the request
counted with its three histograms, and the Server-Timing header formatted. The end-to-end
budgets are measured by `python -m bench.run` (metrics are always on); this isolates the
part metrics add, to compare with the ~1 ms added-latency budget.
"""

from __future__ import annotations

import timeit

from app.api.trace import Trace
from app.metrics import Metrics

MODEL = "meta-llama/llama-4-scout:free"
ROUTE = "/v1/chat/completions"


def main() -> None:
    metrics = Metrics(lambda: {MODEL: None})

    def one_request() -> None:
        metrics.attempt(MODEL, "ok")
        trace = Trace(id="x", route=ROUTE, started=0.0, arrived=0.0, upstream_ms=1.0)
        trace.server_timing()
        metrics.request(ROUTE, 200, MODEL, "BYPASS", 12.0, 3.0, 0.4)

    number = 100_000
    best = min(timeit.repeat(one_request, number=number, repeat=5)) / number
    print(f"metrics and Server-Timing per request: {best * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
