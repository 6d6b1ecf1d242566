"""POST /v1/responses: the OpenAI Responses API, stateless as OpenRouter's (openrouter-api.md
§11). A stream commits at its first output event and holds the preamble
(`response.created`, `response.in_progress`, `response.output_item.added`, …) until then.
"""

from __future__ import annotations

import time
from typing import Any

from app.api.dialect import (
    ARRAY,
    BOOLEAN,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    OpenAIErrors,
    check_types,
    load_object,
    openai_usage,
    parsed,
    sse_event,
)
from app.errors import InvalidRequest, ProxyError, UpstreamBroken, UpstreamRejected
from app.request import Keeping, ParsedRequest, Usage
from app.sse import (
    DONE_EVENT,
    OPTIONAL_OBJECT,
    Kind,
    decode,
    split_events,
    text_size,
)
from app.upstream.answers import parse_answer

FIELDS = {
    "model": STRING,
    "stream": BOOLEAN,
    "instructions": STRING,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "max_output_tokens": INTEGER,
    "tools": ARRAY,
    "text": OBJECT,
    "reasoning": OBJECT,
    "provider": OBJECT,
}
# Events that end a stream: the answer is complete, or failed (§11.3, §11.4).
_COMPLETE = frozenset({"response.completed", "response.incomplete"})
_FAILED = frozenset({"response.failed", "response.error", "error"})
# Fields that, when an event has them, are objects for every client (openrouter-api.md §11.3).
_OBJECTS = ("response", "item", "part", "usage")
# Output items that can arrive whole, with no delta at all (§11.3, "Proxy note").
_WHOLE_ITEMS = frozenset({"function_call", "reasoning"})
# openrouter-api.md §11.4: the precise reason of a failure, as an HTTP status.
_STATUS_BY_ERROR_TYPE = {
    "rate_limit_exceeded": 429,
    "provider_overloaded": 529,
    "timeout": 408,
    "context_length_exceeded": 400,
    "invalid_request": 400,
    "authentication": 401,
    "permission_denied": 403,
    "payment_required": 402,
    "not_found": 404,
}


class ResponsesDialect(OpenAIErrors):
    name = "responses"
    upstream_path = "/responses"
    falls_back = True
    keeping = Keeping(completed_event="response.completed")

    def storable(self, answer: dict[str, Any]) -> bool:
        return answer.get("status") == "completed"

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        data = load_object(raw, "'input'")
        items = data.get("input")
        if not (isinstance(items, str) or isinstance(items, list)):
            raise InvalidRequest(
                "'input' is required: a string or an array of input items.", param="input"
            )
        check_types(data, FIELDS)
        return parsed(
            self, raw, data, default_model, lambda: _image_urls(items), "max_output_tokens"
        )

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        data = parse_answer(body, model, self.rejection)
        if data.get("status") == "failed":
            raise _failure(data, model)
        if not isinstance(data.get("output"), list):
            raise UpstreamBroken(f"{model}: OpenRouter sent a response without output")
        return data

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        """After an upstream `response.failed`, an `error` event too: openai-python raises
        only on an event with a top-level `error` (openrouter-api.md §11.4)."""
        if b"response.failed" not in block:
            return block
        out: list[bytes] = []
        for event in split_events(block):
            out.append(event)
            kind, data = self.classify(event)
            if kind is Kind.ERROR and data is not None and data.get("type") == "response.failed":
                response = data.get("response")
                model = response.get("model", "") if isinstance(response, dict) else ""
                failure = _failure(data, str(model))
                out.append(sse_event({"type": "error", **failure.body()}))
        return b"".join(out)

    def classify(self, event: bytes) -> tuple[Kind, dict[str, Any] | None]:
        kind, data = decode(event)
        if kind is not Kind.OTHER or data is None:
            return kind, data
        if not _well_formed(data):
            return Kind.MALFORMED, None
        kind_of = data.get("type")
        if kind_of in _FAILED:
            return Kind.ERROR, data
        if _is_content(data):
            return Kind.CONTENT, data
        return Kind.OTHER, data

    def finished(self, data: dict[str, Any]) -> bool:
        return data.get("type") in _COMPLETE

    def rejection(self, data: dict[str, Any], model: str) -> UpstreamRejected:
        """Any of the three failure shapes of §11.4, or OpenRouter's usual envelope."""
        return _failure(data, model)

    def usage(self, data: dict[str, Any]) -> Usage | None:
        response = data.get("response")
        source = response if isinstance(response, dict) else data
        return openai_usage(source, "input_tokens", "output_tokens")

    def output(self, data: dict[str, Any]) -> int:
        return text_size(data.get("delta"))

    def error_event(self, error: ProxyError, model: str) -> bytes:
        """`response.failed` for clients that follow the event types (Codex), then an
        `error` event, which openai-python raises on (§11.4 "How clients react")."""
        failed = {
            "type": "response.failed",
            "response": {
                "object": "response",
                "created_at": int(time.time()),
                "model": model,
                "status": "failed",
                "error": {"code": "server_error", "message": error.message},
                "output": [],
            },
        }
        return sse_event(failed) + sse_event({"type": "error", **error.body()}) + DONE_EVENT


def _failure(data: dict[str, Any], model: str) -> UpstreamRejected:
    source = data.get("response") if isinstance(data.get("response"), dict) else data
    assert isinstance(source, dict)
    error = source.get("error") if isinstance(source.get("error"), dict) else data
    assert isinstance(error, dict)
    error_type = str(source.get("error_type") or data.get("error_type") or "")
    code = error.get("code")
    status = code if isinstance(code, int) else _STATUS_BY_ERROR_TYPE.get(error_type, 502)
    message = str(error.get("message") or "OpenRouter reported a failed response")
    metadata = {"error_type": error_type} if error_type else {}
    return UpstreamRejected(status, f"{model}: {message}", metadata=metadata)


def _well_formed(data: dict[str, Any]) -> bool:
    """A string `type`, a string `delta` on `*.delta` events (text, reasoning, tool
    arguments), and objects where the Responses events carry objects (DESIGN §5)."""
    kind_of = data.get("type")
    if not isinstance(kind_of, str):
        return False
    if kind_of.endswith(".delta") and not isinstance(data.get("delta"), str):
        return False
    for name in _OBJECTS:
        if not isinstance(data.get(name), OPTIONAL_OBJECT):
            return False
    return True


def _is_content(data: dict[str, Any]) -> bool:
    kind_of = data["type"]
    if kind_of.endswith(".delta"):
        return True
    if kind_of in _COMPLETE:
        return True
    if kind_of in ("response.output_item.added", "response.output_item.done"):
        item = data.get("item") or {}
        item_type = item.get("type")
        if isinstance(item_type, str) and item_type in _WHOLE_ITEMS:
            return item_type == "function_call" or bool(item.get("encrypted_content"))
    return False


def _image_urls(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    urls: list[str] = []
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "input_image":
                url = part.get("image_url")
                urls.append(url if isinstance(url, str) else "")
    return urls


RESPONSES = ResponsesDialect()
