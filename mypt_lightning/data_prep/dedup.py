"""Deduplicate episodes, exactly or by their normalised user messages.

    exact          same system, messages and language (``_``-prefixed metadata ignored)
    user_message   same user messages after case, punctuation and spacing are ignored
                   (a replay record: same text); keeps at most ``max_per_key`` per key

The first occurrence wins; input order is kept. Keys are 64-bit hashes, so memory is a
few dozen bytes per distinct episode.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Iterator

from .split import user_keys
from .textnorm import stable_hash

MODES = ("exact", "user_message", "both")


def exact_key(record: dict) -> int:
    public = {k: v for k, v in record.items() if not k.startswith("_") or k == "_replay"}
    return stable_hash(json.dumps(public, sort_keys=True, ensure_ascii=False), "exact:")


def user_message_key(record: dict) -> int:
    return stable_hash(":".join(str(k) for k in user_keys(record)), "users:")


def deduplicate(records: Iterable[tuple[str, dict]], mode: str = "exact", max_per_key: int = 1,
                stats: Counter | None = None) -> Iterator[dict]:
    """Yield the records to keep; ``stats`` counts kept / dropped by reason."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_per_key < 1:
        raise ValueError("max_per_key must be >= 1")
    stats = stats if stats is not None else Counter()
    seen_exact: set[int] = set()
    per_user: Counter[int] = Counter()
    for _, record in records:
        stats["read"] += 1
        if mode in ("exact", "both"):
            key = exact_key(record)
            if key in seen_exact:
                stats["dropped_exact_duplicate"] += 1
                continue
            seen_exact.add(key)
        if mode in ("user_message", "both"):
            key = user_message_key(record)
            if per_user[key] >= max_per_key:
                stats["dropped_same_user_message"] += 1
                continue
            per_user[key] += 1
        stats["kept"] += 1
        yield record
