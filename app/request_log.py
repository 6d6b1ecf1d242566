"""Logging set-up and the one line logged per request (text, or JSON with PROXY_LOG_FORMAT).

Fields are formatted only when the level is enabled, so `PROXY_LOG_LEVEL=warning` costs
the hot path nothing. Never log a header or a body: they carry keys and prompts.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

log = logging.getLogger("openrouter_proxy.request")


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
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("openrouter_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_request(**fields: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    log.info(text, extra={"fields": fields})
