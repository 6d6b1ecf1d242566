"""The parsed request every pipeline stage reads, and the `Dialect` seam each API fills in.

It sits below every stage (auth, quotas, cache, routing, upstream) so that none of them
imports the API layer: a route's dialect turns its body into a `ParsedRequest`, and the
stages read only that (STYLE §5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.rewrite import rewrite
from app.sse import Kind

if TYPE_CHECKING:
    from starlette.responses import Response

    from app.errors import ProxyError, UpstreamError


@dataclass(frozen=True, slots=True)
class Keeping:
    """How the response cache keeps and replays one API's answers (DESIGN §8)."""

    # Streams are kept byte for byte and replayed only in the mode stored, complete at
    # this event `type`; None: a stream is folded into one JSON answer served in either mode.
    completed_event: str | None = None
    legacy_chunks: bool = False  # folded answers are `text_completion`s (legacy completions)
    deterministic: bool = False  # cacheable whatever sampling is asked (embeddings)


# Fields the proxy walks itself and never forwards (DESIGN §5): `models` everywhere, and
# Anthropic's `fallbacks`, which OpenRouter maps onto `models` (openrouter-api.md §12.1).
WALKED_FIELDS = frozenset({"models", "fallbacks"})


@dataclass(frozen=True, slots=True)
class Needs:
    """What a model must support to answer (DESIGN §6: `free` is filtered by it)."""

    images: bool = False
    tools: bool = False
    tokens: int = 0  # the prompt and the output asked for
    prompt_tokens: int = 0  # the prompt alone


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost as OpenRouter reported them, whatever the API's field names."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    estimated: bool = False  # counted by the proxy: the stream ended before its usage


class Dialect(Protocol):
    """What differs between the OpenAI chat, Responses, Anthropic Messages, embeddings and
    legacy completions APIs; everything else is the one pipeline (DESIGN §1)."""

    name: str  # the route's label in logs, usage and metrics: "chat", "messages", …
    upstream_path: str  # under OPENROUTER_BASE_URL
    falls_back: bool  # may another model answer? (never for embeddings)
    terminator: bytes  # what ends a stream for this API's clients (`data: [DONE]`, or none)
    keeping: Keeping  # how the response cache keeps and replays its answers

    def parse(self, raw: bytes, default_model: str) -> ParsedRequest:
        """Validate the body (InvalidRequest on a mistake) and say what the stages need."""

    def check_answer(self, body: bytes, model: str) -> dict[str, Any]:
        """The parsed answer; an UpstreamError when a 200 body is not a usable answer."""

    def classify(self, event: bytes) -> tuple[Kind, dict[str, Any] | None]:
        """One raw SSE event: keep-alive, [DONE], an error, the first content, or other."""

    def finished(self, data: dict[str, Any]) -> bool:
        """This stream event says the answer is complete (a real finish)."""

    def storable(self, answer: dict[str, Any]) -> bool:
        """A non-stream answer (a JSON object without an error) is clean and complete:
        a later identical request may be served the same bytes (DESIGN §8)."""

    def usage(self, data: dict[str, Any]) -> Usage | None:
        """Usage carried by a non-stream body or by one stream event, if any."""

    def output(self, data: dict[str, Any]) -> int:
        """Bytes of generated text (answer, reasoning, tool arguments) in one well-formed
        stream event: what a stream cut before its usage is counted by (DESIGN §7)."""

    def relayed(self, block: bytes, include_usage: bool) -> bytes:
        """Which of these complete upstream events reach the client, as whole events."""

    def rejection(self, data: dict[str, Any], model: str) -> UpstreamError:
        """An error carried in-band (a 200 body or a stream event) as an UpstreamError."""

    def error_event(self, error: ProxyError, model: str) -> bytes:
        """The bytes that end a committed stream with `error`, terminator included."""

    def error_response(self, error: ProxyError) -> Response:
        """`error` rendered in this API's error shape, with its status and headers."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    dialect: Dialect
    raw: bytes
    data: dict[str, Any]
    model: str  # as requested (an alias such as `free` included), or the default
    models: tuple[str, ...]  # the client's own fallbacks, in order
    stream: bool
    measure: Callable[[], Needs]  # scans the body: only `free` and count_tokens need it

    @property
    def needs(self) -> Needs:
        """What a model must support to answer this request (measured on demand)."""
        return self.measure()

    def body_for(self, model: str) -> bytes:
        """The body sent upstream for one attempt: `model` set, walked fields dropped, every
        other byte as the client sent it (no re-encoding, DESIGN §5)."""
        if self.data.get("model") == model and WALKED_FIELDS.isdisjoint(self.data):
            return self.raw
        return rewrite(self.raw, {"model": model}, WALKED_FIELDS)
