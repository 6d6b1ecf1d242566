"""The one client of OpenRouter: builds each attempt, enforces its deadlines, and maps
transport exceptions and error bodies to `UpstreamError` subclasses (the only place that
does).

An attempt succeeds only with a usable answer: a JSON body with `choices` and no error
(non-stream), or a first content event (stream, DESIGN §5). Whitespace and `:` keep-alive
comments never extend a deadline (openrouter-api.md §7, §10.7).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import SecretStr

from app.config import Settings
from app.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from app.header_text import header_safe
from app.redaction import Redactor
from app.request import ParsedRequest, Usage
from app.sse import EventSplitter
from app.upstream.answers import rejection
from app.upstream.deadlines import Deadline, DeadlineReader
from app.upstream.reading import close_response, first_content, read_answer
from app.upstream.transport import (
    LOCAL_ERRNOS,
    AiohttpTransport,
    CannotConnect,
    Transport,
    UpstreamResponse,
    out_of_resources,
    proxy_for,
    read_all,
)

# Response headers a client may rely on and which the proxy passes back (openrouter-api.md §8).
PASSED_RESPONSE_HEADERS = ("x-generation-id",)
# How long a stream may take to end after `data: [DONE]` before its connection is dropped.
_DRAIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Call:
    """One client request as every attempt sends it; only the model changes."""

    request: ParsedRequest
    client_headers: dict[str, str]  # the client's forwarded headers, lower-case names
    request_id: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete non-stream answer, body as received minus leading whitespace."""

    model: str
    body: bytes
    headers: dict[str, str]
    usage: Usage | None = None


@dataclass(slots=True)
class OpenedStream:
    """A stream committed at its first content event; `head` holds the bytes to send first."""

    model: str
    response: UpstreamResponse
    reader: DeadlineReader  # under the total deadline
    splitter: EventSplitter
    head: bytes
    headers: dict[str, str]
    redactor: Redactor = field(default_factory=Redactor)

    async def drain(self) -> None:
        """Read the body's end after `[DONE]`: a response closed before its last chunk
        costs its connection, and a new TCP connection per stream (bench/README.md)."""
        self.reader.extend_to(asyncio.get_running_loop().time() + _DRAIN_SECONDS)
        with contextlib.suppress(TimeoutError, ConnectionError):
            while await self.reader.next() is not None:
                pass

    async def aclose(self) -> None:
        self.reader.close()
        await close_response(self.response)


class OpenRouterClient:
    def __init__(self, settings: Settings, transport: Transport | None = None) -> None:
        self._settings = settings
        self._base = settings.openrouter_base_url
        self._transport = transport or AiohttpTransport(proxy_for(self._base))
        # Every upstream text relayed or logged passes through it (DESIGN §5), proxy keys too.
        self.redactor = Redactor([settings.upstream_key, _secret(settings.admin_key)])
        self.keyed = settings.upstream_key is not None
        # The headers every call sends, built once: most clients send none of their own.
        self._plain = self._headers_for({})

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _headers(self, client_headers: dict[str, str], request_id: str) -> dict[str, str]:
        headers = self._headers_for(client_headers) if client_headers else self._plain.copy()
        headers["X-Request-Id"] = request_id
        return headers

    def _headers_for(self, client_headers: dict[str, str]) -> dict[str, str]:
        """DESIGN §5: the upstream key and attribution; a client's own referer and title win."""
        settings = self._settings
        title = (
            client_headers.get("x-openrouter-title")
            or client_headers.get("x-title")
            or settings.openrouter_app_title
        )
        return {
            **client_headers,
            "Authorization": f"Bearer {settings.upstream_key}",
            "HTTP-Referer": client_headers.get("http-referer") or settings.openrouter_app_url,
            "X-Title": title,
            "X-OpenRouter-Title": title,
            "Content-Type": "application/json",
            # Uncompressed: SSE must not wait for a compressor, and bodies are small.
            "Accept-Encoding": "identity",
        }

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        until: float,
        model: str | None = None,
    ) -> UpstreamResponse:
        """The response's head; a failure names `model`, the attempt it ended, if any."""
        about = f"{model}: " if model is not None else ""
        try:
            async with asyncio.timeout_at(until):
                return await self._transport.request(
                    method, url, headers, body, self._settings.connect_timeout
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{about}OpenRouter did not answer {method} {url} in time"
            ) from exc
        except MemoryError as exc:
            raise out_of_resources(exc) from exc
        except ConnectionError as exc:
            if exc.errno in LOCAL_ERRNOS:
                raise out_of_resources(exc) from exc
            if isinstance(exc, CannotConnect):
                raise UpstreamUnreachable(
                    f"{about}cannot reach OpenRouter at {self._base} ({exc}). "
                    "Check OPENROUTER_BASE_URL and the network."
                ) from exc
            # Connected, then reset or closed before an answer: this attempt broke (§6).
            raise UpstreamBroken(
                f"{about}OpenRouter closed the connection before answering {method} {url} ({exc})"
            ) from exc

    async def _send(
        self, url: str, body: bytes, headers: dict[str, str], deadline: Deadline, model: str
    ) -> UpstreamResponse:
        response = await self._request("POST", url, headers, body, deadline.first_byte, model)
        if response.status != 200:
            try:
                raise await self._rejection(response, deadline, model)
            finally:
                await close_response(response)
        return response

    async def _rejection(
        self, response: UpstreamResponse, deadline: Deadline, model: str
    ) -> UpstreamError:
        try:
            async with asyncio.timeout_at(deadline.total):
                body = await read_all(response)
        except (TimeoutError, ConnectionError):
            body = b""
        return self.redactor.error(rejection(response.status, body, dict(response.headers), model))

    async def _start(
        self, call: Call, model: str, first_byte_timeout: float | None = None
    ) -> tuple[UpstreamResponse, Deadline]:
        deadline = Deadline.start(self._settings, first_byte_timeout)
        headers = self._headers(call.client_headers, call.request_id)
        url = self._base + call.request.dialect.upstream_path
        body = call.request.body_for(model)
        return await self._send(url, body, headers, deadline, model), deadline

    async def complete(self, call: Call, model: str, *, last: bool = True) -> Answer:
        response, deadline = await self._start(call, model)
        try:
            body = await read_answer(response, deadline, model)
        finally:
            await close_response(response)
        try:
            data = call.request.dialect.check_answer(body, model)
        except UpstreamError as error:
            raise self.redactor.error(error) from None
        usage = call.request.dialect.usage(data)
        return Answer(model=model, body=body, headers=_passed_headers(response), usage=usage)

    async def open_stream(self, call: Call, model: str, *, last: bool = True) -> OpenedStream:
        """The stream, committed at its first content; while another candidate remains
        (`last` false) content must come within PROXY_STREAM_FIRST_TOKEN_TIMEOUT."""
        settings = self._settings
        first_token = (
            None if last else min(settings.stream_first_token_timeout, settings.first_byte_timeout)
        )
        response, deadline = await self._start(call, model, first_token)
        dialect = call.request.dialect
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                body = await read_answer(response, deadline, model)
                dialect.check_answer(body, model)
                raise UpstreamBroken(f"{model}: OpenRouter answered a stream request with JSON")
            reader = DeadlineReader(response.chunks(), deadline.first_byte)
            splitter = EventSplitter()
            try:
                head = await first_content(reader, splitter, model, dialect)
            except BaseException:
                reader.close()
                raise
            reader.extend_to(deadline.total)
            reader.limit_idle(settings.stream_idle_timeout)
        except BaseException as exc:
            self.redactor.error(exc)
            await close_response(response)
            raise
        return OpenedStream(
            model=model,
            response=response,
            reader=reader,
            splitter=splitter,
            head=self.redactor.bytes(head),
            headers=_passed_headers(response),
            redactor=self.redactor,
        )

    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        """POST a small request outside the attempts walk (count_tokens): status and body."""
        settings = self._settings
        until = asyncio.get_running_loop().time() + settings.connect_timeout
        until += settings.first_byte_timeout
        headers = self._headers({}, request_id)
        response = await self._request("POST", f"{self._base}{path}", headers, body, until)
        try:
            async with asyncio.timeout_at(until):
                return response.status, await read_all(response)
        except (TimeoutError, ConnectionError) as exc:
            raise UpstreamBroken(f"POST {path} did not complete ({exc})") from exc
        finally:
            await close_response(response)

    async def get_json(self, path: str, *, auth: bool) -> Any:
        """GET a small JSON document (catalogue, key info) within connect + first-byte time."""
        headers = {"Authorization": f"Bearer {self._settings.upstream_key}"} if auth else {}
        settings = self._settings
        until = asyncio.get_running_loop().time() + settings.connect_timeout
        until += settings.first_byte_timeout
        response = await self._request("GET", f"{self._base}{path}", headers, None, until)
        try:
            async with asyncio.timeout_at(until):
                body = await read_all(response)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"OpenRouter did not answer GET {path} in time") from exc
        except ConnectionError as exc:
            raise UpstreamBroken(f"the connection broke during GET {path} ({exc})") from exc
        finally:
            await close_response(response)
        if response.status != 200:
            error = rejection(response.status, body, dict(response.headers), path)
            raise self.redactor.error(error)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBroken(f"OpenRouter sent invalid JSON for GET {path}") from exc


def _passed_headers(response: UpstreamResponse) -> dict[str, str]:
    return header_safe(
        {
            name: value
            for name in PASSED_RESPONSE_HEADERS
            if (value := response.headers.get(name)) is not None
        }
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
