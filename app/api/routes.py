"""Which path each API answers on: every inference route is the pipeline with a dialect,
and count_tokens is the Messages dialect's pipeline in its counting mode."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.chat import CHAT
from app.api.completions import COMPLETIONS
from app.api.embeddings import EMBEDDINGS
from app.api.messages import MESSAGES
from app.api.pipeline import Endpoint, endpoint
from app.api.responses import RESPONSES
from app.request import Dialect

INFERENCE: dict[str, Dialect] = {
    "/v1/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/completions": COMPLETIONS,
}
COUNT_TOKENS = "/v1/messages/count_tokens"  # DESIGN §4: authenticated, counts nothing


def _endpoints() -> dict[str, Endpoint]:
    endpoints = {path: endpoint(dialect) for path, dialect in INFERENCE.items()}
    endpoints[COUNT_TOKENS] = endpoint(MESSAGES, counting=True)
    return endpoints


def inference_lanes() -> dict[str, ASGIApp]:
    """The same endpoints as plain ASGI apps, for `ProxyApp`'s short lane."""
    return {path: _asgi(handler) for path, handler in _endpoints().items()}


def _asgi(handler: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return app


def add_inference_routes(app: Starlette) -> None:
    # Plain Starlette routes: FastAPI's dependency solving and body handling cost ~10 % of
    # the hot path's CPU, and the pipeline reads its body itself (bench/README.md).
    for path, handler in _endpoints().items():
        app.add_route(path, handler, methods=["POST"])
