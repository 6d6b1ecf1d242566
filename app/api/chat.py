"""POST /v1/chat/completions: OpenAI chat, streaming or not (openrouter-api.md §3, §6, §7)."""

from __future__ import annotations

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
    without_events,
)
from app.errors import InvalidRequest, ProxyError
from app.request import Keeping, ParsedRequest, Usage
from app.sse import DONE_EVENT, Kind, classify, text_size
from app.upstream.answers import check_answer

FIELDS = {
    "model": STRING,
    "stream": BOOLEAN,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER,
    "max_tokens": INTEGER,
    "max_completion_tokens": INTEGER,
    "n": INTEGER,
    "seed": INTEGER,
    "stop": ((str, list), "a string or an array of strings"),
    "tools": ARRAY,
    "stream_options": OBJECT,
    "response_format": OBJECT,
    "provider": OBJECT,
}


def finished_choice(data: dict[str, Any]) -> bool:
    """A choice with a real `finish_reason`: the answer is complete (DESIGN §5)."""
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            finish = choice.get("finish_reason")
            if finish is not None and finish != "error":
                return True
    return False


def every_choice_finished(answer: dict[str, Any]) -> bool:
    """Choices present, and every one really finished without an error (DESIGN §8)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("error"):
            return False
        if choice.get("finish_reason") in (None, "error"):
            return False
    return True


class ChatDialect(OpenAIErrors):
    name = "chat"
    upstream_path = "/chat/completions"
    falls_back = True
    keeping = Keeping()

    def storable(self, answer: dict[str, Any]) -> bool:
        return every_choice_finished(answer)

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        data = load_object(raw, "'messages'")
        messages = data.get("messages")
        _check_messages(messages)
        check_types(data, FIELDS)
        return parsed(
            self,
            raw,
            data,
            default_model,
            lambda: _image_urls(messages),
            "max_completion_tokens",
            "max_tokens",
        )

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        return check_answer(body, model)

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        return relayed_without_usage(block, include_usage)

    def classify(self, event: bytes) -> tuple[Kind, dict[str, Any] | None]:
        return classify(event)

    def finished(self, data: dict[str, Any]) -> bool:
        return finished_choice(data)

    def usage(self, data: dict[str, Any]) -> Usage | None:
        return openai_usage(data, "prompt_tokens", "completion_tokens")

    def output(self, data: dict[str, Any]) -> int:
        size = 0
        for choice in data["choices"]:
            delta = choice.get("delta") or {}
            size += text_size(delta.get("content")) + text_size(delta.get("reasoning"))
            size += text_size(delta.get("refusal"))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                size += text_size(function.get("name")) + text_size(function.get("arguments"))
        return size

    def error_event(self, error: ProxyError, model: str) -> bytes:
        """One chunk with a top-level OpenAI-shaped `error` (openai-python raises on it)
        and a terminating choice, then `[DONE]`."""
        chunk = {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
            **error.body(),
        }
        return sse_event(chunk) + DONE_EVENT


def relayed_without_usage(block: bytes, include_usage: bool) -> bytes:
    """The final usage-only chunk (`choices: []`) reaches the client only when it asked
    with `stream_options.include_usage`, as with OpenAI (DESIGN §5)."""
    if include_usage or b'"usage"' not in block or b"[]" not in block:
        return block
    return without_events(block, _is_usage_only)


def _is_usage_only(event: bytes) -> bool:
    kind, data = classify(event)
    return (
        kind is Kind.OTHER
        and data is not None
        and data.get("choices") == []
        and isinstance(data.get("usage"), dict)
    )


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("Missing required field 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}].role is required and must be a string.",
                param=f"messages[{i}].role",
            )


def _image_urls(messages: Any) -> list[str]:
    urls: list[str] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                urls.append(url if isinstance(url, str) else "")
    return urls


CHAT = ChatDialect()
