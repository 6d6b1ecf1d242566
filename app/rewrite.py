"""Change a JSON body's top-level fields without re-encoding the rest (DESIGN §5).

Decoding and re-encoding a client's body loses what JSON libraries cannot represent (an
integer above 2**64 becomes `1.2345678901234568e+29`) and reorders nothing useful, so the
proxy edits the bytes instead: it finds where each top-level member starts and ends, and
splices. The body was already parsed once, so it is known to be a valid JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

_WHITESPACE = b" \t\r\n"
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def _skip_ws(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _WHITESPACE:
        i += 1
    return i


def _string_end(raw: bytes, i: int) -> int:
    """Index just past the string starting at raw[i] == '"'."""
    i += 1
    while True:
        j = raw.index(b'"', i)
        backslashes = 0
        k = j - 1
        while raw[k] == _BACKSLASH:
            backslashes += 1
            k -= 1
        if backslashes % 2 == 0:
            return j + 1
        i = j + 1


def _value_end(raw: bytes, i: int) -> int:
    """Index just past the JSON value starting at raw[i]."""
    if raw[i] == _QUOTE:
        return _string_end(raw, i)
    if raw[i] in _OPEN:
        depth = 0
        while True:
            c = raw[i]
            if c == _QUOTE:
                i = _string_end(raw, i)
                continue
            if c in _OPEN:
                depth += 1
            elif c in _CLOSE:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(raw) and raw[i] not in b",}]" and raw[i] not in _WHITESPACE:
        i += 1  # number, true, false, null
    return i


def members(raw: bytes) -> list[tuple[bytes, int, int]]:
    """(key, start, end) of each top-level member: raw[start:end] is `"key": value`."""
    found: list[tuple[bytes, int, int]] = []
    i = _skip_ws(raw, 0) + 1  # past '{'
    while True:
        i = _skip_ws(raw, i)
        if raw[i] == ord("}"):
            return found
        if raw[i] == ord(","):
            i = _skip_ws(raw, i + 1)
        start = i
        key_end = _string_end(raw, i)
        key = raw[start + 1 : key_end - 1]
        i = _skip_ws(raw, key_end) + 1  # past ':'
        i = _skip_ws(raw, i)
        end = _value_end(raw, i)
        found.append((key, start, end))
        i = end


def rewrite(raw: bytes, set_fields: Mapping[str, object], drop: frozenset[str]) -> bytes:
    """`raw` with each of `set_fields` set (replaced in place, or added first) and every
    member named in `drop` removed; every other member goes up byte for byte."""
    spans = members(raw)
    out: list[bytes] = []
    pending = dict(set_fields)
    kept: list[bytes] = []
    for key_bytes, start, end in spans:
        key = orjson.loads(b'"' + key_bytes + b'"')
        if key in drop:
            continue
        if key in pending:
            kept.append(orjson.dumps(key) + b":" + orjson.dumps(pending.pop(key)))
        else:
            kept.append(raw[start:end])
    added = [orjson.dumps(key) + b":" + orjson.dumps(value) for key, value in pending.items()]
    out.append(b"{")
    out.append(b",".join([*added, *kept]))
    out.append(b"}")
    return b"".join(out)
