"""Logging set-up and the one line logged per request (text, or JSON with PROXY_LOG_FORMAT).

Fields are formatted only when the level is enabled, so `PROXY_LOG_LEVEL=warning` costs
the hot path nothing. Never log a header or a body: they carry keys and prompts.

Nothing a client or upstream sends can forge a line (DESIGN §11): in the text format a
field value with spaces, quotes or control characters is JSON-quoted, and any message
that still holds a line break or another control character has it escaped; the JSON
format escapes by construction. `serve` routes uvicorn's and every other logger's lines
through the same handler, so with `json` every line the process writes is JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson

log = logging.getLogger("openrouter_proxy.request")
# The request being served, for lines written deeper down (a failed upstream attempt).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


_UNICODE_BREAKS = {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        text = orjson.dumps(line, default=str).decode()
        # JSON leaves U+2028/U+2029/U+0085 raw, and some readers split lines on them.
        return text if text.isascii() else text.translate(_UNICODE_BREAKS)


# C0 controls, DEL and the Unicode line breaks, written as escapes in text lines.
_CONTROLS = {c: json.dumps(chr(c))[1:-1] for c in (*range(32), 0x7F, 0x85, 0x2028, 0x2029)}


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line if line.isprintable() else line.translate(_CONTROLS)


def configure_logging(level: str, fmt: str, *, server: bool = False) -> None:
    """The proxy's own loggers; with `server`, uvicorn's and every other logger's too
    (`serve` then runs uvicorn with `log_config=None`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("openrouter_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    if server:
        for name in ("uvicorn", ""):  # "": the root logger (asyncio, aiohttp, ...)
            logger = logging.getLogger(name)
            logger.handlers[:] = [handler]
            logger.setLevel(level.upper())
        logging.getLogger("uvicorn").propagate = False


def log_request(**fields: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    text = " ".join(f"{key}={_field(value)}" for key, value in fields.items() if value is not None)
    log.info(text, extra={"fields": fields})


def _field(value: Any) -> str:
    """A value as one unambiguous token: quoted when it holds spaces, quotes or controls."""
    text = str(value)
    if text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    return json.dumps(text)
