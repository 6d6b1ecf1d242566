"""What the dialects share: reading a JSON object, checking field types, OpenAI's error
shape, and the in-band error rules OpenRouter uses on every route (openrouter-api.md §4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from app.api.render import error_response
from app.errors import InvalidRequest, ProxyError, UpstreamError
from app.request import Dialect, Needs, ParsedRequest, Usage
from app.sse import DONE_EVENT, split_events
from app.upstream.answers import in_band_rejection

# field -> (accepted JSON types, what to tell the client). bool is excluded from numbers.
FieldTable = Mapping[str, tuple[tuple[type, ...], str]]

NUMBER = ((int, float), "a number")
INTEGER = ((int,), "an integer")
STRING = ((str,), "a string")
BOOLEAN = ((bool,), "a boolean")
ARRAY = ((list,), "an array")
OBJECT = ((dict,), "an object")

# What one image is counted as when fitting a request to a model's context length: a base64
# photo is megabytes of JSON but about a thousand tokens.
IMAGE_TOKENS = 1_000


_NUMBER = (int, float)  # a tuple: `int | float` would build a new union on every call


def load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON ({exc}). Send a JSON object with {what}."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"Request body must be a JSON object with {what}.")
    return data


def check_types(data: dict[str, Any], table: FieldTable) -> None:
    # Over the request's few fields, not the table's many: this runs on every request.
    for name, value in data.items():
        if value is None or (spec := table.get(name)) is None:
            continue
        types, wanted = spec
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidRequest(
                f"'{name}' must be {wanted}, got {type(value).__name__}.", param=name
            )


def model_list(value: Any, field: str) -> tuple[str, ...]:
    """`models: ["a", "b"]`, or Anthropic's `fallbacks: [{"model": "a"}]`."""
    if value is None:
        return ()
    if isinstance(value, list):
        names = [item.get("model") if isinstance(item, dict) else item for item in value]
        if all(isinstance(name, str) and name for name in names):
            return tuple(str(name) for name in names)
    raise InvalidRequest(f"'{field}' must be an array of model ids.", param=field)


def needs(data: dict[str, Any], raw: bytes, image_urls: Iterable[str], *outputs: str) -> Needs:
    """A cheap estimate: 4 bytes a token for text, a flat cost per image, plus the output
    the client asked for (the first of `outputs` that is set)."""
    urls = list(image_urls)
    text_bytes = len(raw) - sum(len(url) for url in urls)
    requested = next((data[f] for f in outputs if isinstance(data.get(f), int)), 0)
    prompt = text_bytes // 4 + IMAGE_TOKENS * len(urls)
    return Needs(
        images=bool(urls),
        tools=bool(data.get("tools")),
        tokens=prompt + int(requested),
        prompt_tokens=prompt,
    )


def parsed(
    dialect: Dialect,
    raw: bytes,
    data: dict[str, Any],
    default_model: str,
    image_urls: Callable[[], Iterable[str]],
    *outputs: str,
    models: tuple[str, ...] | None = None,
) -> ParsedRequest:
    """The request as the stages read it, from where every text route keeps `model`,
    `models` and `stream`; its needs are measured only if a stage asks."""
    return ParsedRequest(
        dialect=dialect,
        raw=raw,
        data=data,
        model=data.get("model") or default_model,
        models=model_list(data.get("models"), "models") if models is None else models,
        stream=bool(data.get("stream")),
        measure=lambda: needs(data, raw, image_urls(), *outputs),
    )


def openai_usage(data: dict[str, Any], prompt: str, completion: str) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    cost = usage.get("cost")
    return Usage(
        prompt_tokens=_int(usage.get(prompt)),
        completion_tokens=_int(usage.get(completion)),
        cost=float(cost) if isinstance(cost, _NUMBER) and not isinstance(cost, bool) else None,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sse_event(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def without_events(block: bytes, unwanted: Callable[[bytes], bool]) -> bytes:
    """`block` minus the events `unwanted` picks; the others keep their bytes."""
    return b"".join(event for event in split_events(block) if not unwanted(event))


class OpenAIErrors:
    """OpenAI's error shape, which every route but `/v1/messages` answers with, and
    OpenRouter's in-band error envelope (`{"error": {"code", "message", …}}`)."""

    terminator = DONE_EVENT

    def error_response(self, error: ProxyError) -> Response:
        return error_response(error)

    def rejection(self, data: dict[str, Any], model: str) -> UpstreamError:
        return in_band_rejection(data, model)
