"""POST /v1/messages: the Anthropic Messages API (Claude Code, the `anthropic` SDKs),
openrouter-api.md §12. Errors take Anthropic's shape and types; a stream commits at its
first `content_block_delta` (or a `tool_use` block) and holds `message_start`,
`content_block_start` and `ping` until then.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.api.dialect import (
    ARRAY,
    BOOLEAN,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    check_types,
    load_object,
    model_list,
    openai_usage,
    parsed,
    sse_event,
    without_events,
)
from app.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamBroken,
    UpstreamError,
    UpstreamRejected,
)
from app.request import Keeping, ParsedRequest, Usage
from app.sse import OPTIONAL_OBJECT, OPTIONAL_TEXT, Kind, decode, text_size
from app.upstream.answers import parse_answer

FIELDS = {
    "model": STRING,
    "stream": BOOLEAN,
    "max_tokens": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "top_k": INTEGER,
    "system": ((str, list), "a string or an array of content blocks"),
    "stop_sequences": ARRAY,
    "tools": ARRAY,
    "metadata": OBJECT,
    "provider": OBJECT,
}
# Anthropic's error types, by the HTTP status they come with (openrouter-api.md §12.4).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "timeout_error": 408,
    "rate_limit_error": 429,
    "overloaded_error": 529,
    "api_error": 502,
}
# The object each event of Anthropic's stream carries (openrouter-api.md §12.3).
_OBJECT_OF = {
    "message_start": "message",
    "content_block_start": "content_block",
    "content_block_delta": "delta",
    "message_delta": "delta",
}
# The fields of a content block delta that carry generated text.
_DELTA_TEXT = ("text", "thinking", "partial_json")


class MessagesDialect:
    name = "messages"
    upstream_path = "/messages"
    falls_back = True
    terminator = b""  # Anthropic streams end at message_stop
    keeping = Keeping(completed_event="message_stop")

    def storable(self, answer: dict[str, Any]) -> bool:
        return answer.get("type") == "message"

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        """Without OpenRouter's trailing `event: data` / `data: [DONE]`, which Anthropic
        does not send and the anthropic SDK (2.x) fails to parse as JSON."""
        if b"[DONE]" not in block:
            return block
        return without_events(block, lambda event: self.classify(event)[0] is Kind.DONE)

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        data = load_object(raw, "'messages'")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"messages[{i}] must be an object with a string 'role'.",
                    param=f"messages[{i}]",
                )
        check_types(data, FIELDS)
        if data.get("models") is not None and data.get("fallbacks") is not None:
            raise InvalidRequest("Send 'fallbacks' or 'models', not both.", param="fallbacks")
        models = model_list(data.get("fallbacks"), "fallbacks") or model_list(
            data.get("models"), "models"
        )
        return parsed(
            self,
            raw,
            data,
            default_model,
            lambda: _image_sources(messages),
            "max_tokens",
            models=models,
        )

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        data = parse_answer(body, model, self.rejection)
        if data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise UpstreamBroken(f"{model}: OpenRouter sent an answer that is not a message")
        return data

    def classify(self, event: bytes) -> tuple[Kind, dict[str, Any] | None]:
        kind, data = decode(event)
        if kind is not Kind.OTHER or data is None:
            return kind, data
        if not _well_formed(data):
            return Kind.MALFORMED, None
        if _is_content(data):
            return Kind.CONTENT, data
        return kind, data

    def finished(self, data: dict[str, Any]) -> bool:
        return data.get("type") == "message_stop"

    def usage(self, data: dict[str, Any]) -> Usage | None:
        return openai_usage(data, "input_tokens", "output_tokens")

    def output(self, data: dict[str, Any]) -> int:
        delta = data.get("delta")
        if data["type"] != "content_block_delta" or not isinstance(delta, dict):
            return 0
        return sum(text_size(delta.get(name)) for name in _DELTA_TEXT)

    def rejection(self, data: dict[str, Any], model: str) -> UpstreamError:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        assert isinstance(error, dict)
        code = error.get("code")
        status = (
            code
            if isinstance(code, int) and 400 <= code < 600
            else _STATUS_BY_TYPE.get(str(error.get("type")), 502)
        )
        message = str(error.get("message") or "OpenRouter reported an error")
        metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
        assert isinstance(metadata, dict)
        return UpstreamRejected(status, message, metadata=metadata)

    def error_event(self, error: ProxyError, model: str) -> bytes:
        """`event: error`, which the anthropic SDK raises on (§12.4)."""
        return sse_event(_anthropic_body(error), "error")

    def error_response(self, error: ProxyError) -> Response:
        status = error.status_code
        if isinstance(error, UpstreamRejected) and error.status in (503, 529):
            status = 529  # the anthropic SDK's OverloadedError
        return Response(
            orjson.dumps(_anthropic_body(error)),
            status_code=status,
            headers=error.headers,
            media_type="application/json",
        )


def _anthropic_body(error: ProxyError) -> dict[str, Any]:
    kind = _TYPE_BY_STATUS.get(error.status_code, "api_error")
    if isinstance(error, UpstreamRejected) and error.status in (503, 529):
        kind = "overloaded_error"
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def _well_formed(data: dict[str, Any]) -> bool:
    """A string `type`, and the objects each event carries as objects, with text where the
    anthropic SDK reads text (DESIGN §5): `{"message": 5}` or `"delta": "oops"` is broken."""
    kind_of = data.get("type")
    if not isinstance(kind_of, str):
        return False
    needed = _OBJECT_OF.get(kind_of)
    if needed is not None and not isinstance(data.get(needed), dict):
        return False
    if not isinstance(data.get("usage"), OPTIONAL_OBJECT):
        return False
    delta = data.get("delta")
    return not isinstance(delta, dict) or all(
        isinstance(delta.get(name), OPTIONAL_TEXT) for name in _DELTA_TEXT
    )


def _is_content(data: dict[str, Any]) -> bool:
    kind_of = data["type"]
    if kind_of == "content_block_delta" or kind_of == "message_stop":
        return True
    if kind_of == "message_delta":
        delta = data.get("delta")
        return isinstance(delta, dict) and delta.get("stop_reason") is not None
    if kind_of == "content_block_start":
        block = data.get("content_block")
        return isinstance(block, dict) and block.get("type") == "tool_use"
    return False


def _image_sources(messages: list[Any]) -> list[str]:
    sources: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "image":
                source = block.get("source")
                data = source.get("data") or source.get("url") if isinstance(source, dict) else ""
                sources.append(data if isinstance(data, str) else "")
    return sources


MESSAGES = MessagesDialect()
