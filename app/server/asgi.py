"""The ASGI application class: FastAPI with only the middleware the proxy uses.

FastAPI 0.165 wraps every request in native OpenTelemetry (which reads the environment on
each call), an exception-telemetry layer, a body-size limit and an AsyncExitStack for
uploaded files. The proxy exports no OpenTelemetry and enforces PROXY_MAX_BODY_MB itself,
and those two layers cost it measurably per request (bench/README.md, "Profile"). Its
stack: errors, the user middleware (the browser guard), the exception handlers, the
AsyncExitStack FastAPI's own routes rely on, the router.

POSTs to the inference routes take a shorter lane still: after the browser guard they go
straight to the pipeline, which renders every error itself, past the exception handlers,
the AsyncExitStack, the router's matching and Starlette's per-route wrappers (the last of
the layers the profile showed on every request). The same paths stay in the router, so
any other method still gets its 405.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class InferenceLane:
    """POST to one of `lanes` → that ASGI app; anything else → the rest of the stack."""

    def __init__(self, app: ASGIApp, lanes: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and (lane := self.lanes.get(scope["path"])) is not None
        ):
            await lane(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ProxyApp(FastAPI):
    lanes: Mapping[str, ASGIApp] = {}  # set by create_app: path -> the pipeline's endpoint

    def build_middleware_stack(self) -> ASGIApp:
        error_handler = None
        handlers: dict[Any, Any] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        # FastAPI's own routes need the AsyncExitStack it keeps in the scope.
        app: ASGIApp = AsyncExitStackMiddleware(self.router)
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        app = InferenceLane(app, self.lanes)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # lifespan
            return
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        await self.middleware_stack(scope, receive, send)
