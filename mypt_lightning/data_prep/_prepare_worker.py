"""The per-chunk work of prepare_sft, run in worker processes (or inline with one worker).

A chunk is a byte range of one input file (whole lines). For each line: parse, validate and
serialize with ``protocol.serialize_episode`` (content as plain text, tags by id, so a
message containing "<myPT_eot>" can never become a special id), apply the length limit,
and collect the keys the split needs. The result is a few flat numpy arrays, cheap to send
back to the parent process: token ids as uint16 (the vocabulary has 50304 rows) and loss
weights as uint8 codes of ``2 * weight`` (every docs/design.md section 1 weight is a multiple of 0.5),
3 bytes per token instead of 8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mypt_lightning.tokens.protocol import EpisodeError

from .jsonl import get_field, is_blank, parse_line
from .split import field_keys, user_keys

_STATE: dict[str, Any] = {}


def init_worker(options: dict[str, Any]) -> None:
    """Pool initializer: ``options`` = weighted, max_length, truncate (None/"head"/"tail"),
    profile (protocol_profiles.Profile; default ours), pack_by_field, split_by_fields, overlap_fields."""
    from mypt_lightning.tokens.protocol_profiles import get_profile

    from mypt_lightning.tokens.tokenizer import get_tokenizer

    _STATE.clear()
    _STATE.update(options)
    _STATE["tokenizer"] = get_tokenizer()
    _STATE["profile"] = get_profile(_STATE.get("profile"))


def init_pool_worker(options: dict[str, Any], parent_pid: int) -> None:
    """Initializer of a pool process: :func:`init_worker`, after making it a helper that
    dies with its parent (SIGKILL from the kernel, so no orphan keeps its memory) and leaves
    stop signals to it: a group SIGTERM or Ctrl-C reaches the parent, which cleans up and
    ends the pool; the parent's ``Pool.terminate()`` still ends it. This also replaces the
    Python handlers a fork inherits (a trainer's that only records SIGTERM, say)."""
    from data_modules.process_lifetime import die_with_parent, ignore_stop_signals

    die_with_parent(parent_pid)
    ignore_stop_signals(parent_pid)
    init_worker(options)


def read_lines(path: str, start: int, length: int, first_line: int) -> list[tuple[int, bytes]]:
    """The non-blank lines of a byte range, with their line numbers."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(length)
    return [(first_line + i, line) for i, line in enumerate(data.split(b"\n")) if not is_blank(line)]


def process_chunk(task: tuple[str, int, int, int]) -> dict[str, Any]:
    path = task[0]
    lines = read_lines(*task)
    opts = _STATE
    tok, weighted, limit, truncate = opts["tokenizer"], opts["weighted"], opts["max_length"], opts["truncate"]
    pack_field, split_fields, overlap_fields = opts["pack_by_field"], opts["split_by_fields"], opts["overlap_fields"]

    tokens: list[int] = []
    weights: list[float] = []
    lengths: list[int] = []
    user: list[int] = []
    user_counts: list[int] = []
    extra: list[int] = []
    extra_counts: list[int] = []
    overlaps: dict[str, tuple[list[int], list[int]]] = {f: ([], []) for f in overlap_fields}
    groups: list[str | None] = []
    errors: list[tuple[str, str, str]] = []
    too_long: list[tuple[int, int]] = []
    cut: list[tuple[int, int]] = []
    serialize = opts["profile"].serialize
    truncated = replay = 0

    for number, line in lines:
        where = f"{path}:{number}"
        try:
            record = parse_line(line, where, validate=False)
            ids, ws = serialize(record, weighted, tok, where=where)  # validates
        except EpisodeError as exc:
            errors.append((exc.where, exc.field, exc.reason))
            continue
        n = len(ids)
        if limit is not None and n > limit:
            if not truncate:
                too_long.append((number, n))
                continue
            ids, ws = (ids[-limit:], ws[-limit:]) if truncate == "tail" else (ids[:limit], ws[:limit])
            truncated += 1
            cut.append((number, n))
        replay += record.get("_replay") is True
        tokens.extend(ids)
        weights.extend(ws)
        lengths.append(len(ids))
        keys = user_keys(record)
        user.extend(keys)
        user_counts.append(len(keys))
        more = [k for f in split_fields for k in field_keys(record, f)]
        extra.extend(more)
        extra_counts.append(len(more))
        for f in overlap_fields:
            fk = field_keys(record, f)
            overlaps[f][0].extend(fk)
            overlaps[f][1].append(len(fk))
        if pack_field is not None:
            value = get_field(record, pack_field)
            groups.append(None if value is None else str(value))

    u64 = np.uint64
    token_array = np.fromiter(tokens, dtype=np.uint16, count=len(tokens))  # ids < 50304 < 2**16
    weight_array = np.array(weights, dtype=np.float32)
    codes = (weight_array * 2).astype(np.uint8)  # docs/design.md section 1 weights are multiples of 0.5
    if not np.array_equal(codes * np.float32(0.5), weight_array):
        raise RuntimeError("a loss weight is not a multiple of 0.5; the scratch encoding cannot hold it")
    return {
        "tokens": token_array,
        "weight_codes": codes,
        "lengths": np.array(lengths, dtype=np.int32),
        "user": (np.array(user, dtype=u64), np.array(user_counts, dtype=np.int32)),
        "extra": (np.array(extra, dtype=u64), np.array(extra_counts, dtype=np.int32)),
        "overlap": {f: (np.array(k, dtype=u64), np.array(c, dtype=np.int32)) for f, (k, c) in overlaps.items()},
        "groups": groups,
        "errors": errors,
        "too_long": too_long,
        "cut": cut,
        "truncated": truncated,
        "replay": replay,
        "records": len(lines),
    }
