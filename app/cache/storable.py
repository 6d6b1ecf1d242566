"""Which non-stream answers may be stored (DESIGN §8: never errors, never a failed finish).

The pipeline has already relayed these bodies; this only decides whether a later request
may be served the same bytes. What "complete" means is the dialect's to say.
"""

from __future__ import annotations

import orjson

from app.request import Dialect


def is_storable(dialect: Dialect, body: bytes) -> bool:
    """A clean, complete non-stream answer of `dialect`'s API."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(answer, dict) or answer.get("error"):
        return False
    return dialect.storable(answer)
