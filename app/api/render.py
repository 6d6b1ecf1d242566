"""Errors as OpenAI's clients read them (`{"error": {"message", "type", "param", "code"}}`),
for every route but /v1/messages, whose dialect renders Anthropic's shape; and the app's
handlers, so that Starlette's own 404/405 and FastAPI's validation errors look the same.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.errors import InvalidRequest, NotFound, ProxyError


def error_response(exc: ProxyError) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error OpenAI-shaped, including Starlette's own 404/405."""

    async def proxy_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(
                NotFound(
                    "Unknown route. The proxy serves /v1/chat/completions, /v1/responses, "
                    "/v1/messages, /v1/embeddings, /v1/completions and /v1/models."
                )
            )
        error = ProxyError(str(exc.detail))
        error.status_code = exc.status_code
        error.type = "invalid_request_error"
        error.code = "method_not_allowed" if exc.status_code == 405 else str(exc.status_code)
        error.headers = dict(exc.headers or {})
        return error_response(error)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = str(first.get("msg", "invalid request"))
        # The field in the message too, as OpenAI's own 400s name it ("rpm: Input should …").
        return error_response(
            InvalidRequest(f"{param}: {message}" if param else message, param=param)
        )

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
