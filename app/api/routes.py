"""Which path each API answers on: every inference route is the pipeline with a dialect."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.chat import CHAT
from app.api.completions import COMPLETIONS
from app.api.embeddings import EMBEDDINGS
from app.api.messages import MESSAGES, count_tokens
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


def inference_lanes() -> dict[str, ASGIApp]:
    """The same endpoints as plain ASGI apps, for `ProxyApp`'s short lane."""
    lanes = {path: _asgi(endpoint(dialect)) for path, dialect in INFERENCE.items()}
    lanes["/v1/messages/count_tokens"] = _asgi(count_tokens)
    return lanes


def _asgi(handler: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return app


def add_inference_routes(app: Starlette) -> None:
    # Plain Starlette routes: FastAPI's dependency solving and body handling cost ~10 % of
    # the hot path's CPU, and the pipeline reads its body itself (bench/README.md).
    for path, dialect in INFERENCE.items():
        app.add_route(path, endpoint(dialect), methods=["POST"])
    app.add_route("/v1/messages/count_tokens", count_tokens, methods=["POST"])
