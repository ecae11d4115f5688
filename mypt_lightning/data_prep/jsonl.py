"""Streaming JSONL in and out, with the error policy every data tool shares.

Reading: :func:`iter_lines` (from :mod:`mypt_lightning.jsonio`) yields ``(line_number, bytes)`` one line at a time (memory stays
flat), :func:`iter_records` parses each line with the project's one strict JSON parser
(:func:`mypt_lightning.jsonio.loads_strict`) and validates it against docs/design.md section 1.
Every JSONL reader of the project goes through :func:`iter_records` or :func:`parse_line`.
A bad record raises an :class:`~mypt_lightning.tokens.protocol.EpisodeError` whose message is
``FILE:LINE: FIELD: WHAT``; an :class:`ErrorLog` decides what happens next:

    ErrorLog("stop")   re-raise at the first bad record (the default of every tool)
    ErrorLog("skip")   count it by reason, keep the first examples, go on

Nothing is dropped silently: tools print ``ErrorLog.summary()`` and datasets store
``ErrorLog.to_dict()`` in their metadata.

Writing: :class:`AtomicTextWriter` writes to a temporary file beside the target and renames
it into place only when the with-block succeeds, so an output file is either the old one or
the complete new one, never half written.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from mypt_lightning.errors import UserError
from mypt_lightning.jsonio import is_blank, iter_lines, loads_strict
from mypt_lightning.tokens.protocol import EpisodeError, parse_episode_line

ON_ERROR_CHOICES = ("stop", "skip")
_INDEX = re.compile(r"\[\d+\]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


class ErrorLog:
    """What to do with bad records (``policy``), and the tally of those skipped."""

    def __init__(self, policy: str = "stop", max_examples: int = 10):
        if policy not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {policy!r}")
        self.policy = policy
        self.max_examples = max_examples
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self.examples: list[str] = []

    def handle(self, error: EpisodeError) -> None:
        """Raise ``error`` (policy stop) or record it (policy skip)."""
        if self.policy == "stop":
            raise EpisodeError(error.where, error.field,
                               f"{error.reason} (nothing was written; --on-error skip skips and counts "
                               "bad records)") from None
        self.add(str(error), category(error))

    def add(self, message: str, reason: str) -> None:
        self.count += 1
        self.by_reason[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)

    def summary(self, what: str = "bad records") -> str:
        if not self.count:
            return f"0 {what}"
        lines = [f"{self.count} {what} skipped:"]
        lines += [f"  {n:>8}  {reason}" for reason, n in self.by_reason.most_common()]
        lines += ["  first examples:"] + [f"    {e}" for e in self.examples]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "skipped": self.count, "by_reason": dict(self.by_reason.most_common()),
                "examples": list(self.examples)}


def category(error: EpisodeError) -> str:
    """A reason without positions or values, for counting: ``messages[*].role: unknown role '…'``."""
    field = _INDEX.sub("[*]", error.field)
    reason = _QUOTED.sub("…", error.reason.split(";")[0].split(" (")[0])
    return f"{field}: {reason}" if field else reason


def check_input_files(paths: Iterable[str | Path]) -> list[Path]:
    out = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"input file {p} does not exist" if not p.exists() else f"{p} is not a file")
        out.append(p)
    return out


def parse_line(line: bytes | str, where: str, *, validate: bool = True) -> dict:
    """One JSONL line -> record; EpisodeError (naming ``where``) on bad or hostile JSON
    (``jsonio.loads_strict``: depth, huge numbers, duplicate keys, NaN, invalid UTF-8) or,
    with ``validate``, on a record that breaks docs/design.md section 1."""
    if validate:
        return parse_episode_line(line, where=where)
    record = loads_strict(line, where)
    if not isinstance(record, dict):
        raise EpisodeError(where, "", f"record must be a JSON object, got {type(record).__name__}")
    return record


def iter_records(paths: Iterable[str | Path], errors: ErrorLog, *, validate: bool = True
                 ) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each good record of each file, in order; bad ones go to ``errors``."""
    for path in check_input_files(paths):
        for number, line in iter_lines(path):
            where = f"{path}:{number}"
            try:
                record = parse_line(line, where, validate=validate)
            except EpisodeError as exc:
                errors.handle(exc)
                continue
            yield where, record


def dumps(record: Any) -> str:
    """One JSONL line (no newline): UTF-8 as is, keys in their order."""
    return json.dumps(record, ensure_ascii=False)


def get_field(record: dict, dotted: str, default: Any = None) -> Any:
    """``get_field(r, "_meta.operator")`` -> ``r["_meta"]["operator"]`` or ``default``."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def set_field(record: dict, dotted: str, value: Any) -> None:
    """``set_field(r, "_meta.source", "x")``, creating intermediate objects."""
    parts = dotted.split(".")
    target = record
    for part in parts[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    target[parts[-1]] = value


class AtomicTextWriter:
    """``with AtomicTextWriter(path) as out: out.write(...)`` -> ``path`` appears complete or not at all.

    :func:`data_modules.atomic_write.atomic_file` in text mode (UTF-8, ``\\n`` line ends):
    the temporary file lives in the target's directory and is removed when the block raises.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._context = None

    def __enter__(self):
        from data_modules.atomic_write import atomic_file

        if self.path.is_dir():
            raise UserError(f"output {self.path} is a directory")
        self._context = atomic_file(self.path, "w", encoding="utf-8", newline="\n")
        return self._context.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._context is not None
        return bool(self._context.__exit__(exc_type, exc, tb))


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write ``records`` atomically; returns how many."""
    n = 0
    with AtomicTextWriter(path) as out:
        for record in records:
            out.write(dumps(record) + "\n")
            n += 1
    return n
