"""Every replica's `Activity` on one status page (DESIGN §13): each replica writes its
`export` to Redis every PUBLISH_SECONDS under its heartbeat id, expiring after
EXPORT_SECONDS, and the snapshot reads those of the replicas in the heartbeat set.

The request path is untouched (the export is taken in the background). While Redis is
away, or when a call fails, the snapshot holds this replica's export alone: every call
is bounded by the failover's deadline, so the page never waits for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from app.shared.connection import DOWN
from app.shared.failover import CALL_DEADLINE, Failover
from app.status.activity import Activity

PUBLISH_SECONDS = 1.0  # the page shows another replica's requests within ~2 s
EXPORT_SECONDS = 10  # a replica that died without saying so drops out after this


class SharedActivity:
    """This replica's activity published, and every live replica's read back."""

    def __init__(self, failover: Failover, activity: Activity) -> None:
        self._failover = failover
        self._activity = activity
        self._replicas = failover.shared.key("replicas")  # the heartbeat's set

    def _key(self, replica: str) -> str:
        return self._failover.shared.key("activity", replica)

    def start(self) -> None:
        """Publish now and then every PUBLISH_SECONDS until the shared client closes."""
        self._failover.shared.background(self._publish_forever())

    async def _publish_forever(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    async def publish(self) -> None:
        if not self._failover.up:
            return  # the heartbeat probes; publishing resumes once Redis answers
        export = json.dumps(self._activity.export(), separators=(",", ":"))
        with contextlib.suppress(*DOWN):
            async with asyncio.timeout(CALL_DEADLINE):
                await self._failover.shared.client.set(
                    self._key(self._failover.replica), export, ex=EXPORT_SECONDS
                )

    async def exports(self) -> list[dict[str, Any]]:
        """This replica's export (fresh) and the other live replicas' (as last published)."""
        local = self._activity.export()
        if not self._failover.up:
            return [local]
        client = self._failover.shared.client
        try:
            async with asyncio.timeout(CALL_DEADLINE):
                alive = await client.zrange(self._replicas, 0, -1)
                ids = [i.decode() for i in alive if isinstance(i, bytes)]
                others = [self._key(i) for i in ids if i != self._failover.replica]
                published = await client.mget(others) if others else []
        except DOWN:
            return [local]
        return [local, *(json.loads(raw) for raw in published if raw is not None)]
