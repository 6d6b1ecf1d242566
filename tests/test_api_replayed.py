"""A hit's response sends the header bytes Starlette's `Response` would send (issue 28)."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from app.api.replayed import replayed

BODY = b'{"id":"gen-1","choices":[]}'


@pytest.mark.parametrize(
    ("media_type", "headers"),
    [
        (
            "application/json",
            {"x-generation-id": "gen-1", "X-Cache": "HIT", "X-Proxy-Attempts": "0"},
        ),
        ("text/event-stream", {"X-Cache": "HIT", "Cache-Control": "no-cache"}),
        ("application/json", {"Content-Type": "application/json; x=1", "Content-Length": "3"}),
        ("text/plain; charset=latin-1", {}),
    ],
)
def test_a_replayed_response_has_the_bytes_of_a_starlette_response(
    media_type: str, headers: dict[str, str]
):
    expected = Response(BODY, media_type=media_type, headers=headers)
    got = replayed(BODY, media_type, dict(headers))
    assert got.raw_headers == expected.raw_headers
    assert (got.status_code, got.body, got.background) == (200, BODY, None)
