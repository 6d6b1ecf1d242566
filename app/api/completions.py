"""POST /v1/completions: legacy text completions, `prompt` in, choices with `text` out
(openrouter-api.md §14); otherwise chat's stream, errors and fallback."""

from __future__ import annotations

from typing import Any

from app.api.chat import FIELDS as CHAT_FIELDS
from app.api.chat import every_choice_finished, finished_choice, relayed_without_usage
from app.api.dialect import (
    OpenAIErrors,
    check_types,
    load_object,
    openai_usage,
    parsed,
    sse_event,
)
from app.errors import InvalidRequest, ProxyError
from app.request import Keeping, ParsedRequest, Usage
from app.sse import (
    DONE_EVENT,
    OPTIONAL_OBJECT,
    OPTIONAL_TEXT,
    Kind,
    decode,
    text_size,
)
from app.upstream.answers import check_answer

FIELDS = {**CHAT_FIELDS, "echo": ((bool,), "a boolean"), "suffix": ((str,), "a string")}
# The fields of a choice that clients read as text.
_CHOICE_TEXT = ("text", "reasoning", "finish_reason")


class CompletionsDialect(OpenAIErrors):
    name = "completions"
    upstream_path = "/completions"
    falls_back = True
    keeping = Keeping(legacy_chunks=True)

    def storable(self, answer: dict[str, Any]) -> bool:
        return every_choice_finished(answer)

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        data = load_object(raw, "'prompt'")
        prompt = data.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt)):
            raise InvalidRequest(
                "'prompt' is required: a string or an array of strings or token ids.",
                param="prompt",
            )
        check_types(data, FIELDS)
        return parsed(self, raw, data, default_model, tuple, "max_tokens")

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        return check_answer(body, model)  # chat's rules: `choices`, no error inside

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        return relayed_without_usage(block, include_usage)

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
        return finished_choice(data)

    def usage(self, data: dict[str, Any]) -> Usage | None:
        return openai_usage(data, "prompt_tokens", "completion_tokens")

    def output(self, data: dict[str, Any]) -> int:
        return sum(text_size(choice.get("text")) for choice in data["choices"])

    def error_event(self, error: ProxyError, model: str) -> bytes:
        chunk = {
            "object": "text_completion",
            "model": model,
            "choices": [{"index": 0, "text": "", "finish_reason": "error"}],
            **error.body(),
        }
        return sse_event(chunk) + DONE_EVENT


def _well_formed(data: dict[str, Any]) -> bool:
    """`choices` a list of objects whose `text` and `finish_reason` are strings, `usage` an
    object: what an OpenAI SDK reads (DESIGN §5)."""
    choices, usage = data.get("choices"), data.get("usage")
    if not isinstance(choices, list) or not isinstance(usage, OPTIONAL_OBJECT):
        return False
    return all(
        isinstance(choice, dict)
        and all(isinstance(choice.get(name), OPTIONAL_TEXT) for name in _CHOICE_TEXT)
        for choice in choices
    )


def _is_content(data: dict[str, Any]) -> bool:
    return any(
        choice.get("text")
        or choice.get("reasoning")
        or choice.get("finish_reason") not in (None, "error")
        for choice in data["choices"]
    )


COMPLETIONS = CompletionsDialect()
