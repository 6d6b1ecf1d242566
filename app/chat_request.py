"""The chat request as the proxy needs it: checked once, forwarded byte for byte.

Validation is a hand-written table rather than a pydantic model of the whole body: bodies
can be megabytes of messages and images, every unknown field must survive untouched, and
only a few fields decide what the proxy does (DESIGN §5, §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from app.config import MIB
from app.errors import InvalidRequest, PayloadTooLarge

# field -> (accepted JSON types, what to tell the client). bool is excluded from numbers.
_TYPED_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "stream": ((bool,), "a boolean"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "frequency_penalty": ((int, float), "a number"),
    "presence_penalty": ((int, float), "a number"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "n": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "stop": ((str, list), "a string or an array of strings"),
    "tools": ((list,), "an array"),
    "stream_options": ((dict,), "an object"),
    "response_format": ((dict,), "an object"),
    "provider": ((dict,), "an object"),
}


# What one image is counted as when fitting a request to a model's context length.
IMAGE_TOKENS = 1_000


@dataclass(frozen=True, slots=True)
class ChatRequest:
    raw: bytes
    data: dict[str, Any]
    model: str
    models: tuple[str, ...]
    stream: bool

    def body_for(self, model: str) -> bytes:
        """The body sent upstream for one attempt: `model` set, `models` never forwarded."""
        if self.data.get("model") == model and "models" not in self.data:
            return self.raw
        body = dict(self.data)
        body["model"] = model
        body.pop("models", None)
        return orjson.dumps(body)

    def _image_urls(self) -> list[str]:
        urls: list[str] = []
        for message in self.data["messages"]:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    image = part.get("image_url")
                    url = image.get("url") if isinstance(image, dict) else image
                    urls.append(url if isinstance(url, str) else "")
        return urls

    @property
    def wants_images(self) -> bool:
        """A message carries an image part, so only image-input models can answer."""
        return bool(self._image_urls())

    @property
    def wants_tools(self) -> bool:
        return bool(self.data.get("tools"))

    @property
    def estimated_tokens(self) -> int:
        """A cheap estimate: 4 bytes a token for text, a flat cost per image (a base64 photo
        is megabytes of JSON but about a thousand tokens), plus the requested output."""
        images = self._image_urls()
        text_bytes = len(self.raw) - sum(len(url) for url in images)
        requested = self.data.get("max_completion_tokens") or self.data.get("max_tokens") or 0
        return text_bytes // 4 + IMAGE_TOKENS * len(images) + int(requested)


def parse_chat_request(raw: bytes, default_model: str) -> ChatRequest:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON ({exc}). Send a JSON object with 'messages'."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object with 'messages'.")
    _check_messages(data.get("messages"))
    for name, (types, wanted) in _TYPED_FIELDS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidRequest(
                f"'{name}' must be {wanted}, got {type(value).__name__}.", param=name
            )
    model = data.get("model") or default_model
    return ChatRequest(
        raw=raw,
        data=data,
        model=model,
        models=_check_models(data.get("models")),
        stream=bool(data.get("stream")),
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


def _check_models(models: Any) -> tuple[str, ...]:
    if models is None:
        return ()
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequest("'models' must be an array of model ids.", param="models")
    return tuple(models)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than PROXY_MAX_BODY_MB ({limit / MIB:g} MiB). "
        "Send a smaller request or raise the limit."
    )
