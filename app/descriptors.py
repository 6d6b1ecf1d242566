"""Open files are shared by client and upstream connections (DESIGN §6).

A stream holds two sockets, one to its client and one to OpenRouter. When the process has
no descriptor left, uvloop (libuv) accepts each waiting client and closes it at once, to
keep its loop from spinning on `accept`: those clients get a reset and no answer. So the
upstream side never takes the descriptors clients need:

- `reserve` stays free of connections: the process's own files (the database and its
  journal, logs, the event loop's) and clients that arrive all at once;
- upstream connections take at most a quarter of the rest, because clients may arrive
  after the streams started and outnumber them (requests waiting for a cooling model,
  cache hits, idle keep-alive connections, the status page): with the limit at 256, 48
  upstream connections leave room for some 180 clients, whatever order they come in;
- and never more than the clients connected now leave free.

Past either bound a request gets the proxy's own 503 at once, with `Connection: close`.
"""

from __future__ import annotations

import resource

MIN_RESERVE = 64
RESERVE_SHARE = 8  # the reserve: an eighth of the limit, or MIN_RESERVE when that is more
UPSTREAM_SHARE = 4  # upstream connections: at most a quarter of what the reserve leaves


def soft_limit() -> int:
    """The soft open-files limit (`serve` has already raised it to the hard one)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Descriptors:
    """The count of client connections (kept by the server's protocol) and the rule the
    upstream transport follows before opening a connection."""

    def __init__(self, limit: int | None = None) -> None:
        limit = soft_limit() if limit is None else limit
        self.limit = limit
        self.usable = limit - max(MIN_RESERVE, limit // RESERVE_SHARE)
        self.upstream_cap = self.usable // UPSTREAM_SHARE
        self.clients = 0

    def fits(self, upstream: int) -> bool:
        """One more upstream connection stays within both bounds."""
        return upstream < self.upstream_cap and self.clients + upstream < self.usable
