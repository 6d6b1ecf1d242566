"""Which non-stream answers may be stored (DESIGN §8: never errors, never a failed finish).

The pipeline has already relayed these bodies; this only decides whether a later request
may be served the same bytes.
"""

from __future__ import annotations

from typing import Any

import orjson


def is_storable(route: str, body: bytes) -> bool:
    """A clean, complete non-stream answer for `route` (chat, completions, responses, …)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(answer, dict) or answer.get("error"):
        return False
    if route in ("chat", "completions"):
        return _finished_choices(answer)
    if route == "responses":
        return answer.get("status") == "completed"
    if route == "messages":
        return answer.get("type") == "message"
    if route == "embeddings":
        data = answer.get("data")
        return isinstance(data, list) and bool(data)  # a 200 without vectors is a failure
    return False


def is_storable_completion(body: bytes) -> bool:
    """Chat or legacy completion: choices present, no error, every choice really finished."""
    return is_storable("chat", body)


def _finished_choices(answer: dict[str, Any]) -> bool:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("error"):
            return False
        if choice.get("finish_reason") in (None, "error"):
            return False
    return True
