"""POST /v1/embeddings (openrouter-api.md §13). Never answered by another model: vectors of
two models are not comparable, so only the named model is tried, waiting within
PROXY_MAX_WAIT when it is rate-limited (DESIGN §4)."""

from __future__ import annotations

from typing import Any

from app.api.dialect import (
    INTEGER,
    OBJECT,
    STRING,
    OpenAIErrors,
    check_types,
    load_object,
    needs,
    openai_usage,
)
from app.errors import InvalidRequest, ProxyError, UpstreamBroken
from app.request import Keeping, ParsedRequest, Usage
from app.sse import Kind
from app.upstream.answers import parse_answer

FIELDS = {
    "model": STRING,
    "encoding_format": STRING,
    "dimensions": INTEGER,
    "input_type": STRING,
    "provider": OBJECT,
}


class EmbeddingsDialect(OpenAIErrors):
    name = "embeddings"
    upstream_path = "/embeddings"
    falls_back = False
    keeping = Keeping(deterministic=True)

    def storable(self, answer: dict[str, Any]) -> bool:
        data = answer.get("data")
        return isinstance(data, list) and bool(data)  # a 200 without vectors is a failure

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        data = load_object(raw, "'model' and 'input'")
        items = data.get("input")
        if items is None or items == "" or items == []:
            raise InvalidRequest(
                "'input' is required: a string or an array of strings or token ids.",
                param="input",
            )
        check_types(data, FIELDS)
        model = data.get("model")
        if not model:
            raise InvalidRequest(
                "Embeddings need a 'model': an embedding model id such as "
                "'openai/text-embedding-3-small' (vectors of two models are not comparable, "
                "so the proxy never picks one for you).",
                param="model",
            )
        if "/" not in model:
            raise InvalidRequest(
                f"'{model}' is not an embedding model id: embeddings never use 'free' or "
                "chains, because vectors of two models are not comparable.",
                param="model",
            )
        return ParsedRequest(
            dialect=self,
            raw=raw,
            data=data,
            model=model,
            models=(),
            stream=False,
            measure=lambda: needs(data, raw, ()),
        )

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        data = parse_answer(body, model)
        vectors = data.get("data")
        if not isinstance(vectors, list) or not vectors:
            # OpenRouter answers some inputs with 200 and no vectors (§13).
            raise UpstreamBroken(f"{model}: OpenRouter sent no embeddings for this input")
        return data

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        return block

    def classify(self, event: bytes) -> tuple[Kind, dict[str, Any] | None]:
        return Kind.OTHER, None  # embeddings never stream

    def finished(self, data: dict[str, Any]) -> bool:
        return True

    def usage(self, data: dict[str, Any]) -> Usage | None:
        return openai_usage(data, "prompt_tokens", "completion_tokens")

    def output(self, data: dict[str, Any]) -> int:
        return 0  # embeddings never stream

    def error_event(self, error: ProxyError, model: str) -> bytes:
        raise AssertionError("embeddings never stream")


EMBEDDINGS = EmbeddingsDialect()
