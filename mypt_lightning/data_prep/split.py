"""Deterministic train/val split by conversation, and the train/val overlap report.

Every episode carries a set of 64-bit keys: the loosely normalised text of each of its user
messages (a replay record: its text), plus the values of any ``split_by`` fields (e.g.
``_meta.payload``). Episodes that share a key are one group (connected components, so
A~B and B~C puts A, B and C together), and a group goes to train or val as a whole::

    ep0  user "What is Python?"            ─┐ group 0 ("what is python")
    ep1  user "what is python"  + "And R?" ─┤ group 0 (shares a key with ep0)
    ep2  user "And R?"                     ─┘ group 0 (shares "and r" with ep1)
    ep3  user "Hallo!"                      ── group 1

Groups are ranked by a seeded hash of their smallest key (independent of file order) and
taken into val in that order until ``round(val_fraction * N)`` episodes are reached
(groups that would overshoot are passed over). The same input and seed always give the
same split; the same user prompt (up to case, punctuation and spacing) never lands in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .jsonl import get_field
from .textnorm import mix64, normalize_loose, normalize_space, stable_hash


def _text_key(text: str, salt: str) -> int:
    return stable_hash(normalize_loose(text) or normalize_space(text) or text, salt)


def user_keys(record: dict) -> list[int]:
    """Keys of the user messages (a replay record: of its text)."""
    if record.get("_replay") is True:
        return [_text_key(record["text"], "replay:")]
    return [_text_key(m["content"], "user:") for m in record["messages"] if m["role"] == "user"]


def field_values(record: dict, dotted: str) -> list[str]:
    """The value(s) of a metadata field as strings (a list gives one per element)."""
    value = get_field(record, dotted)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False) for v in values]


def field_keys(record: dict, dotted: str) -> list[int]:
    return [_text_key(v, f"field:{dotted}:") for v in field_values(record, dotted)]


@dataclass
class SplitResult:
    is_val: np.ndarray  # bool per episode
    groups: int
    target_val: int
    notes: list[str] = field(default_factory=list)

    @property
    def num_val(self) -> int:
        return int(self.is_val.sum())


def connected_groups(num_episodes: int, keys: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Group label (the smallest member index) of each episode; episodes sharing a key share a label."""
    labels = np.arange(num_episodes, dtype=np.int64)
    if keys.size == 0:
        return labels
    order = np.argsort(keys, kind="stable")
    k, o = keys[order], owners[order].astype(np.int64)
    same = np.flatnonzero(k[1:] == k[:-1])
    a, b = o[same], o[same + 1]
    while a.size:
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        if np.array_equal(la, lb):
            break
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        np.minimum.at(labels, la, low)  # also lower the old roots, so whole groups merge
        np.minimum.at(labels, lb, low)
        while True:  # pointer jumping: every label becomes its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    return labels


def assign_val_split(num_episodes: int, keys: np.ndarray, owners: np.ndarray, val_fraction: float,
                     seed: int = 0) -> SplitResult:
    """Split episodes into train/val by group (see the module docstring).

    ``keys[j]`` (uint64) belongs to episode ``owners[j]``; an episode without keys is a
    group of its own.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_fraction}")
    keys = np.asarray(keys, dtype=np.uint64)
    owners = np.asarray(owners, dtype=np.int64)
    is_val = np.zeros(num_episodes, dtype=bool)
    labels = connected_groups(num_episodes, keys, owners)
    roots, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    result = SplitResult(is_val, groups=int(roots.size), target_val=0)
    if val_fraction == 0.0 or num_episodes < 2:
        return result
    target = min(max(1, int(round(val_fraction * num_episodes))), num_episodes - 1)
    result.target_val = target

    # Rank groups by a seeded hash of their smallest key: independent of the input order.
    group_key = mix64(roots.astype(np.uint64), 0x5EED)  # episodes without keys: their index
    if keys.size:
        smallest = np.full(roots.size, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(smallest, inverse[owners], keys)
        has_key = np.zeros(roots.size, dtype=bool)
        has_key[inverse[owners]] = True
        group_key = np.where(has_key, smallest, group_key)
    order = np.argsort(mix64(group_key, seed), kind="stable")

    chosen = np.zeros(roots.size, dtype=bool)
    taken = 0
    ranked_sizes = sizes[order]
    prefix = int(np.searchsorted(np.cumsum(ranked_sizes), target, side="right"))
    chosen[order[:prefix]] = True
    taken = int(ranked_sizes[:prefix].sum())
    for g in order[prefix:].tolist():
        if taken >= target:
            break
        if taken + int(sizes[g]) <= target:
            chosen[g] = True
            taken += int(sizes[g])
    if taken == 0:
        smaller = np.flatnonzero(sizes < num_episodes)
        if smaller.size:
            g = int(smaller[np.argmin(sizes[smaller])])
            chosen[g] = True
            taken = int(sizes[g])
    if taken != target:
        result.notes.append(
            f"val holds {taken} episodes instead of {target}: episodes that share a user message "
            f"form groups that are never split (largest group: {int(sizes.max())} episodes)")
    is_val[:] = chosen[inverse]
    return result


def overlap(keys: np.ndarray, owners: np.ndarray, is_val: np.ndarray) -> dict[str, Any]:
    """Distinct keys in train, in val, and in both."""
    keys = np.asarray(keys, dtype=np.uint64)
    in_val = is_val[np.asarray(owners, dtype=np.int64)] if keys.size else np.zeros(0, bool)
    train, val = np.unique(keys[~in_val]), np.unique(keys[in_val])
    shared = np.intersect1d(train, val, assume_unique=True)
    return {"train_distinct": int(train.size), "val_distinct": int(val.size), "shared": int(shared.size),
            "shared_keys": shared}


def find_examples(records: Iterable[tuple[str, dict]], wanted: dict[str, np.ndarray], limit: int = 5
                  ) -> dict[str, list[str]]:
    """Texts of up to ``limit`` shared keys per kind ("user" or a field name), for the report."""
    pending = {kind: set(int(k) for k in keys[: 10 * limit]) for kind, keys in wanted.items() if len(keys)}
    found: dict[str, list[str]] = {kind: [] for kind in pending}
    for _, record in records:
        if not pending:
            break
        for kind in list(pending):
            if kind == "user":
                texts = ([record["text"]] if record.get("_replay") is True
                         else [m["content"] for m in record["messages"] if m["role"] == "user"])
                pairs = zip(user_keys(record), texts)
            else:
                pairs = zip(field_keys(record, kind), field_values(record, kind))
            for key, text in pairs:
                if key in pending[kind]:
                    pending[kind].discard(key)
                    found[kind].append(text if len(text) <= 120 else text[:117] + "...")
                    if len(found[kind]) >= limit or not pending[kind]:
                        del pending[kind]
                        break
    return found
