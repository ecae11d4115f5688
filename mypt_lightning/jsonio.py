"""The one JSON parser of the project: :func:`loads_strict`.

Every JSONL line (``data_prep.jsonl.iter_records`` / ``parse_line``) and every single JSON
text from a user or a model (a workspace manifest, a generated tool call, a resume file)
is parsed here, so hostile input is one named error everywhere instead of a crash (JSONL
files are read line by line with :func:`iter_lines`):

    nested deeper than MAX_DEPTH (64) arrays/objects     checked before parsing, without recursion
    an integer longer than MAX_INT_DIGITS (100) digits   Python's int-string limit would raise ValueError
    a number that is not finite as a float (1e999)       JSON has no infinity
    NaN, Infinity, -Infinity                             not JSON (Python's json accepts them)
    a duplicate key in an object                         json.loads keeps the last value silently
    invalid UTF-8 (bytes input), a lone surrogate        named by byte / character offset

Each is an :class:`~mypt_lightning.tokens.episode_schema.EpisodeError` ``WHERE: invalid JSON: WHY``
(a :class:`~mypt_lightning.errors.UserError`), like a syntax error.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

from mypt_lightning.errors import EpisodeError

MAX_DEPTH = 64  # episodes nest about 5 deep; 64 leaves room for any real tool result
MAX_INT_DIGITS = 100  # far beyond any id or count, far below Python's 4300-digit limit

_BOM = b"\xef\xbb\xbf"
# Depth without recursion, at C speed: drop every string literal, then every other character
# but brackets, then remove innermost "[]"/"{}" pairs, one level per pass. A string literal
# always matches (to its closing quote, or to the end when unterminated): linear time.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NON_BRACKETS = {c: None for c in range(128) if chr(c) not in "[]{}"}
_INNERMOST = re.compile(r"\[\]|\{\}")
# Surrogate escapes, exactly and at C speed: with escaped backslashes replaced every backslash
# starts an escape, so a surrogate escape left after removing the valid pairs is a lone one.
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# For the message: the escapes in order (a pair, a lone half, anything else).
_ESCAPES = re.compile(r"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                      r"|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)", re.DOTALL)


class _Rejected(Exception):
    """Raised by the parser hooks; becomes an EpisodeError."""


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {_short(key)} in an object (its first value would be lost)")
            seen.add(key)
    return obj


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Rejected(f"integer with {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {_short(text, 40)} is out of range")
    return value


def _constant(name: str):
    raise _Rejected(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_int, parse_float=_float,
                            parse_constant=_constant)


def _short(text: str, limit: int = 60) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[:limit - 4] + "...'"


def _depth_error(text: str) -> str | None:
    """An error if ``text`` nests deeper than MAX_DEPTH, else None (cheap unless it has many brackets)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    skeleton = _STRING.sub("", text).translate(_NON_BRACKETS)
    for _ in range(MAX_DEPTH):
        skeleton, removed = _INNERMOST.subn("", skeleton)
        if not skeleton or not removed:  # done, or unbalanced (the decoder names the syntax error)
            return None
    return f"nested deeper than {MAX_DEPTH} levels" if skeleton else None


def _surrogate_error(text: str, checked_utf8: bool) -> str | None:
    """Where ``text`` holds a lone surrogate (raw, or as a \\u escape), or None."""
    if not checked_utf8 and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"invalid Unicode (lone surrogate) at character {exc.start}"
    if "\\ud" not in text and "\\uD" not in text:
        return None
    # "_" keeps the halves around an escaped backslash apart: \ud800\\\udc00 is no pair
    if not _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub("", text.replace("\\\\", "_"))):
        return None
    lone = next((m for m in _ESCAPES.finditer(text) if m.group(2)), None)
    at = f" \\{lone.group(2)}) at character {lone.start()}" if lone else ")"
    return f"invalid Unicode (lone surrogate{at}"


def loads_strict(text: str | bytes | bytearray, where: str = "") -> Any:
    """Parse one JSON text (bytes must be UTF-8; a leading BOM is dropped) or raise
    EpisodeError ``WHERE: invalid JSON: WHY`` for anything the module docstring rejects."""
    def fail(reason: str):
        raise EpisodeError(where, "", f"invalid JSON: {reason}") from None

    from_bytes = isinstance(text, (bytes, bytearray))
    if from_bytes:  # strict UTF-8 decoding also refuses encoded surrogates
        data = bytes(text)
        bom = len(_BOM) if data.startswith(_BOM) else 0
        try:
            text = data[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            at = bom + exc.start
            fail(f"invalid UTF-8: byte 0x{data[at]:02x} at byte offset {at}")
    reason = _depth_error(text) or _surrogate_error(text, from_bytes)
    if reason:
        fail(reason)
    try:
        return _DECODER.decode(text)
    except _Rejected as exc:
        fail(str(exc))
    except json.JSONDecodeError as exc:
        fail(str(exc))
    except RecursionError:  # unclosed deep nesting ("[" * 10000) that the depth check left to the
        # decoder; its C scanner stops cleanly at the recursion limit, far above MAX_DEPTH
        fail(f"nested deeper than {MAX_DEPTH} levels")


def is_blank(line: bytes) -> bool:
    """True for a line that holds no record: whitespace only, after a UTF-8 byte order mark
    if it starts with one (an editor's BOM before an empty first line is no bad record)."""
    return not line.removeprefix(_BOM).strip()


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw line)`` for every non-blank line (numbers count blank lines too)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not is_blank(line):
                yield number, line


__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "is_blank", "iter_lines", "loads_strict"]
