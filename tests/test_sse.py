"""The side-scan reads events across chunk boundaries and line-ending styles, and never
changes a byte it relays."""

from __future__ import annotations

import pytest

from app.sse import EventSplitter, Kind, classify, event_data, split_events

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}'
USAGE = b'data: {"choices":[],"usage":{"total_tokens":3}}'


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
@pytest.mark.parametrize("cut", [1, 2, 7, 30, 1000])
def test_events_split_anywhere_come_out_whole_and_unchanged(eol: bytes, cut: int):
    events = [b": OPENROUTER PROCESSING", ROLE, TEXT, USAGE, b"data: [DONE]"]
    stream = b"".join(e + eol + eol for e in events)
    splitter = EventSplitter()
    out = b""
    complete: list[bytes] = []
    for i in range(0, len(stream), cut):
        block = splitter.feed(stream[i : i + cut])
        out += block
        complete.extend(split_events(block))
    assert out == stream
    assert splitter.tail == b""
    assert [classify(e)[0] for e in complete] == [
        Kind.KEEPALIVE,
        Kind.OTHER,
        Kind.CONTENT,
        Kind.OTHER,
        Kind.DONE,
    ]


def test_an_unfinished_event_is_held_back():
    splitter = EventSplitter()
    assert splitter.feed(TEXT) == b""
    assert splitter.feed(b"\n") == b""
    assert splitter.feed(b"\n" + ROLE[:5]) == TEXT + b"\n\n"
    assert splitter.tail == ROLE[:5]


def test_multi_line_data_is_joined():
    assert event_data(b"data: a\ndata:b\n\n") == b"a\nb"
    assert event_data(b": comment\n\n") is None


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            b'data: {"error":{"code":429,"message":"Rate limit exceeded"},"user_id":"u"}\n\n',
            Kind.ERROR,
        ),
        (
            b'data: {"choices":[{"delta":{"content":""},"finish_reason":"error"}],'
            b'"error":{"code":502}}\n\n',
            Kind.ERROR,
        ),
        (b'data: {"choices":[{"delta":{"reasoning":"hmm"}}]}\n\n', Kind.CONTENT),
        (b'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}\n\n', Kind.CONTENT),
        (b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n', Kind.CONTENT),
        (b'data: {"choices":[{"delta":{},"finish_reason":"error"}]}\n\n', Kind.OTHER),
        (b'data: {"choices":[{"delta":{"content":""}}]}\n\n', Kind.OTHER),
        (b"data: not json\n\n", Kind.MALFORMED),
        (b"data: [1, 2]\n\n", Kind.MALFORMED),
        (b'data: {"choices":5}\n\n', Kind.MALFORMED),
        (b'data: {"choices":[{"delta":"oops"}]}\n\n', Kind.MALFORMED),
        (b'data: {"choices":[{"delta":{"content":5}}]}\n\n', Kind.MALFORMED),
        (b'data: {"choices":[{"delta":{"tool_calls":[{"function":"f"}]}}]}\n\n', Kind.MALFORMED),
        (b'data: {"choices":[],"usage":5}\n\n', Kind.MALFORMED),
        (b"event: ping\n\n", Kind.KEEPALIVE),
    ],
)
def test_first_content_and_error_events_are_recognised(event: bytes, kind: Kind):
    assert classify(event)[0] is kind
