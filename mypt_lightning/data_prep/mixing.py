"""Mix JSONL episode files by ratio: ``mix_jsonl([("a.jsonl", 0.7), ("b.jsonl", 0.3)], "m.jsonl")``.

A ratio multiplies a file's record count: 0.3 keeps a seeded 30% sample (without
replacement), 1.0 keeps every record, 2.5 keeps every record twice plus a seeded half.
So ``replay.jsonl:1.0 phase3.jsonl:19.0`` means "all replay records, each phase-3 record
19 times", not shares of the output; the summary prints the resulting shares.

Streaming: pass 1 validates every line (file:line errors, ``on_error``) and records the
byte offset of each good record (8 bytes per record); pass 2 reads the chosen records by
offset, in input order or shuffled, adds provenance (``_meta.source`` = the input file's
name, unless the record already names a source) and writes atomically. The same inputs,
ratios and seed give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError

from .jsonl import AtomicTextWriter, ErrorLog, check_input_files, dumps, parse_line, set_field, get_field


@dataclass
class MixInput:
    path: Path
    ratio: float


def parse_input_spec(spec: str) -> MixInput:
    """``"path.jsonl:0.7"`` -> MixInput; a spec without ``:ratio`` means 1.0."""
    path, sep, ratio = spec.rpartition(":")
    if not sep or not path:
        return MixInput(Path(spec), 1.0)
    try:
        value = float(ratio)
    except ValueError:
        return MixInput(Path(spec), 1.0)  # a ':' that is part of the path
    if not value > 0 or value != value or value == float("inf"):
        raise UserError(f"ratio in {spec!r} must be a positive number")
    return MixInput(Path(path), value)


def _offsets(path: Path, errors: ErrorLog) -> np.ndarray:
    """Byte offsets of the valid records of ``path`` (bad ones go to ``errors``)."""
    offsets: list[int] = []
    position = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    parse_line(line, f"{path}:{number}")
                    offsets.append(position)
                except EpisodeError as exc:
                    errors.handle(exc)
            position += len(line)
    return np.array(offsets, dtype=np.int64)


def choose(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted, with repeats above 1.0) of ``round(ratio * n)`` records out of ``n``."""
    count = int(round(ratio * n))
    whole, rest = divmod(count, n) if n else (0, 0)
    picks = [np.repeat(np.arange(n, dtype=np.int64), whole)] if whole else []
    if rest:
        picks.append(np.sort(rng.choice(n, size=rest, replace=False)).astype(np.int64))
    return np.sort(np.concatenate(picks), kind="stable") if picks else np.zeros(0, np.int64)


def mix_jsonl(inputs: list[MixInput], output: str | Path, *, shuffle: bool = False, seed: int = 0,
              on_error: str = "stop", source_field: str = "_meta.source") -> dict[str, Any]:
    """Write the mix to ``output``; returns per-input counts and shares."""
    if not inputs:
        raise UserError("no --inputs given")
    check_input_files(i.path for i in inputs)
    out = Path(output)
    if any(out.resolve() == i.path.resolve() for i in inputs):
        raise UserError(f"output {out} is also an input")
    errors = ErrorLog(on_error)
    offsets = [_offsets(i.path, errors) for i in inputs]
    chosen = [choose(len(off), i.ratio, np.random.default_rng([seed, k])) for k, (i, off) in
              enumerate(zip(inputs, offsets))]
    order = np.concatenate([np.column_stack([np.full(c.size, k, np.int64), c]) for k, c in enumerate(chosen)]
                           ) if chosen else np.zeros((0, 2), np.int64)
    if shuffle:
        order = order[np.random.default_rng([seed, len(inputs), 7919]).permutation(len(order))]
    if len(order) == 0:
        raise UserError("the mix is empty: no valid records were selected")
    handles = [open(i.path, "rb") for i in inputs]
    try:
        with AtomicTextWriter(out) as writer:
            for k, index in order.tolist():
                handle = handles[k]
                handle.seek(int(offsets[k][index]))
                record = parse_line(handle.readline(), f"{inputs[k].path}", validate=False)
                if get_field(record, source_field) is None:
                    set_field(record, source_field, inputs[k].path.name)
                writer.write(dumps(record) + "\n")
    finally:
        for handle in handles:
            handle.close()
    total = int(len(order))
    rows = [{"path": str(i.path), "ratio": i.ratio, "records": int(len(off)), "selected": int(c.size),
             "share": c.size / total} for i, off, c in zip(inputs, offsets, chosen)]
    return {"output": str(out), "total": total, "inputs": rows, "errors": errors, "shuffled": shuffle, "seed": seed}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'input':<50} {'ratio':>7} {'records':>9} {'selected':>9} {'share':>7}"]
    for r in report["inputs"]:
        lines.append(f"{r['path']:<50} {r['ratio']:>7g} {r['records']:>9} {r['selected']:>9} {100 * r['share']:>6.1f}%")
    lines.append(f"wrote {report['total']} records to {report['output']} "
                 f"({'shuffled, seed ' + str(report['seed']) if report['shuffled'] else 'in input order'})")
    if report["errors"].count:
        lines.append(report["errors"].summary())
    return "\n".join(lines)
