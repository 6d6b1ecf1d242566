"""The answer to POST /v1/messages/count_tokens (DESIGN §4): OpenRouter's own count when
it serves the route, else a local estimate (`{"input_tokens": N}`), never a 404.

OpenRouter's OAS has no such route (openrouter-api.md §12), so the first 404 or 405 is
remembered by this app's counter, built in `create_app`, and every later count is estimated
without asking again.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import UpstreamError
from app.request import ParsedRequest
from app.upstream.client import OpenRouterClient

UPSTREAM_PATH = "/messages/count_tokens"


class TokenCounter:
    def __init__(self, upstream: OpenRouterClient, *, asks: bool) -> None:
        self._upstream = upstream
        self.asks = asks  # False without an upstream key, or once OpenRouter lacks the route

    async def count(
        self, parsed: ParsedRequest, model: str | None, request_id: str
    ) -> tuple[bytes, str | None]:
        """The JSON body to answer with, and the model OpenRouter counted for (None when
        estimated here: 4 bytes a token, as the pipeline measures every request)."""
        if self.asks and model is not None:
            try:
                status, body = await self._upstream.post(
                    UPSTREAM_PATH, parsed.body_for(model), request_id
                )
            except UpstreamError:
                status, body = 0, b""
            if status == 200 and _is_count(body):
                return body, model
            if status in (404, 405):
                self.asks = False
        return orjson.dumps({"input_tokens": max(1, parsed.needs.tokens)}), None


def _is_count(body: bytes) -> bool:
    """A 200 that carries a count; anything else is answered with the estimate."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    count = data.get("input_tokens") if isinstance(data, dict) else None
    return isinstance(count, int) and not isinstance(count, bool)
