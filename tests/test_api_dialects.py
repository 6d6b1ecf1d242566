"""Each API's own rules, asked of its dialect by the cache and the relay (DESIGN §4, §8):
what a complete answer is, how its streams are kept and replayed, and what ends them."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.chat import CHAT
from app.api.completions import COMPLETIONS
from app.api.embeddings import EMBEDDINGS
from app.api.messages import MESSAGES
from app.api.responses import RESPONSES
from app.api.routes import INFERENCE
from app.request import Dialect
from app.sse import DONE_EVENT

FINISHED = {"choices": [{"index": 0, "finish_reason": "stop"}]}


@pytest.mark.parametrize(
    ("dialect", "answer", "storable"),
    [
        (CHAT, FINISHED, True),
        (CHAT, {"choices": [{"index": 0, "finish_reason": None}]}, False),
        (CHAT, {"choices": [{"index": 0, "finish_reason": "error"}]}, False),
        (CHAT, {"choices": []}, False),
        (COMPLETIONS, FINISHED, True),
        (COMPLETIONS, {"choices": [FINISHED["choices"][0], {"index": 1}]}, False),
        (RESPONSES, {"status": "completed"}, True),
        (RESPONSES, {"status": "incomplete"}, False),
        (MESSAGES, {"type": "message"}, True),
        (MESSAGES, {"type": "error"}, False),
        (EMBEDDINGS, {"data": [{"embedding": [0.1]}]}, True),
        (EMBEDDINGS, {"data": []}, False),
    ],
)
def test_each_dialect_says_what_a_complete_answer_is(
    dialect: Dialect, answer: dict[str, Any], storable: bool
):
    assert dialect.storable(answer) is storable


def test_folded_streams_are_the_openai_chunk_apis_and_end_with_done():
    for dialect in (CHAT, COMPLETIONS):
        assert dialect.keeping.completed_event is None
        assert dialect.terminator == DONE_EVENT
    assert COMPLETIONS.keeping.legacy_chunks and not CHAT.keeping.legacy_chunks


def test_streams_kept_as_sent_name_their_completed_event():
    assert RESPONSES.keeping.completed_event == "response.completed"
    assert RESPONSES.terminator == DONE_EVENT
    assert MESSAGES.keeping.completed_event == "message_stop"
    assert MESSAGES.terminator == b""  # Anthropic streams end at message_stop, no [DONE]


def test_only_embeddings_are_deterministic_by_nature():
    assert [d.name for d in INFERENCE.values() if d.keeping.deterministic] == ["embeddings"]
