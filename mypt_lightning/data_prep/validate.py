"""Named checks of a binary episode dataset (docs/design.md section 1 and 5); a failed check names
the split, the sample and the position.

    integrity       train/ exists and the reader's own checks pass for every split (metadata,
                    file sizes, index records tiling tokens.bin, token ids, weights)
    tokenizer       tokenizer_state.json exists and matches this tokenizer
    mask_files      mask.bin equals (mask_weighted.bin > 0) where both exist
    structure       tags only where the protocol puts them: no special id inside a content
                    span, no <|endoftext|> inside an episode, every block closed
    mask_direction  assistant content trained; system/user/context/toolresult text not
    mask_alignment  every tag carries its own weight (the <myPT_assistant> opener 0,
                    </myPT_assistant> and <myPT_eot> 2.0, ...; binary: 1 where > 0), content
                    exactly 1.0: a mask shifted by one position fails here
    segment_ids     packed: segments numbered 1, 2, ... in order, padding (0) only at the end,
                    padding is <|endoftext|> with weight 0
    eot_trained     every conversation ends with a trained <myPT_eot>

Episodes are walked tag by tag with the grammar of the serializer; text between two tags
is checked as one numpy slice, so a dataset of millions of tokens takes seconds.

Legacy MyPT datasets (``protocol`` mypt_chat / mypt_tool, given or detected from the
metadata, see protocol_profiles.profile_from_metadata) are checked against their own
layout: packed padding is <myPT_eot> at weight 0, mypt_tool has a "\n" token (weight 0)
after every block and after the final <myPT_eot>, and a packed episode that fills a whole
block may start mid-conversation (the original packer kept the last block_size tokens of a
long episode): its cut beginning, up to the first closed top-level block, is not checked;
a system block that is the original's built-in agentic prompt may hold the tool-call tags
the original's tokenizer made of its tag strings (protocol_profiles.TAGGED_LEGACY_PROMPTS).
Everything else (tags out of place, shifted masks, untrained stops) fails as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE as A_, ASSISTANT_CONTEXT_CLOSE as AC_, ASSISTANT_CONTEXT_OPEN as AC, ASSISTANT_OPEN as A,
    CITE_CLOSE as CI_, CITE_OPEN as CI, CONTENT_WEIGHT, ENDOFTEXT_ID, EOT, ID_TO_SPECIAL, PAD_ID,
    SPECIAL_TOKEN_WEIGHTS, SYSTEM_CLOSE as S_, SYSTEM_OPEN as S, THINK_CLOSE as TH_, THINK_OPEN as TH,
    TOOLCALL_CLOSE as TC_, TOOLCALL_OPEN as TC, TOOLRESULT_CLOSE as TR_, TOOLRESULT_OPEN as TR,
    USER_CLOSE as U_, USER_CONTEXT_CLOSE as UC_, USER_CONTEXT_OPEN as UC, USER_OPEN as U,
)

CHECKS = ("integrity", "tokenizer", "mask_files", "structure", "mask_direction", "mask_alignment",
          "segment_ids", "eot_trained")
MAX_EXAMPLES = 5

# state -> {tag: next state}; "text" says whether plain text may appear and if it trains.
_TEXT = {"top": None, "sys": False, "user": False, "user_ctx": False, "actx": False, "tres": False,
         "a_start": True, "think": True, "a_after_think": True, "call": True, "a_after_call": None,
         "a_text": True, "cite": True, "a_after_cite": None}
_TEXT_NEXT = {"a_start": "a_text", "a_after_think": "a_text"}  # text opens the answer
_MOVES = {
    "top": {U: "user", AC: "actx", TR: "tres", A: "a_start"},
    "sys": {S_: "top"}, "user": {UC: "user_ctx", U_: "top"}, "user_ctx": {UC_: "user"},
    "actx": {AC_: "top"}, "tres": {TR_: "top"},
    "a_start": {TH: "think", TC: "call", A_: "top"}, "think": {TH_: "a_after_think"},
    "a_after_think": {TC: "call", A_: "top"}, "call": {TC_: "a_after_call"}, "a_after_call": {A_: "top"},
    "a_text": {CI: "cite", A_: "top"}, "cite": {CI_: "a_after_cite"}, "a_after_cite": {A_: "top"},
}
_ASSISTANT_TAGS = {A, A_, TH, TH_, TC, TC_, CI, CI_, EOT}


@dataclass
class CheckResult:
    name: str
    checked: int = 0
    failures: int = 0
    examples: list[str] = field(default_factory=list)
    not_run: str | None = None

    @property
    def passed(self) -> bool:
        return self.not_run is None and self.failures == 0

    def fail(self, where: str, message: str) -> None:
        self.failures += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {message}")


@dataclass
class EpisodeWalk:
    expected: np.ndarray  # weighted expectation per token (binary datasets compare > 0)
    is_tag: np.ndarray
    errors: list[str]
    replay: bool
    complete: bool  # ended at top level right after <myPT_eot>


def _name(t: int) -> str:
    return ID_TO_SPECIAL.get(int(t), "<|endoftext|>" if t == ENDOFTEXT_ID else str(int(t)))


def walk_episode(tokens: np.ndarray, separators: tuple[int, ...] = ()) -> EpisodeWalk:
    """Expected weights of an episode's tokens, and its grammar errors. ``separators``: ids
    allowed (at weight 0) between top-level blocks (mypt_tool's "\\n")."""
    if separators:
        return _walk_with_separators(tokens, separators)
    n = tokens.size
    expected = np.zeros(n, dtype=np.float32)
    tag_pos = np.flatnonzero(tokens >= ENDOFTEXT_ID)
    is_tag = np.zeros(n, dtype=bool)
    is_tag[tag_pos] = True
    if tag_pos.size == 0:  # replay text: every token trained
        expected[:] = CONTENT_WEIGHT
        return EpisodeWalk(expected, is_tag, [], True, True)
    errors: list[str] = []
    state, previous_end = "top", 0
    for k, pos in enumerate(tag_pos.tolist()):
        if pos > previous_end:  # a text span [previous_end, pos)
            trains = _TEXT[state]
            if trains is None:
                errors.append(f"position {previous_end}: text outside any block (after {_name(tokens[previous_end - 1]) if previous_end else 'start'})")
            else:
                expected[previous_end:pos] = CONTENT_WEIGHT if trains else 0.0
                state = _TEXT_NEXT.get(state, state)
        t = int(tokens[pos])
        nxt = _MOVES[state].get(t)
        if t == S and pos == 0 and state == "top":
            nxt = "sys"
        if t == EOT and state == "top" and pos > 0 and int(tokens[pos - 1]) == A_:
            nxt = "top"
        if t == UC and not (state == "user" and pos > 0 and int(tokens[pos - 1]) == U):
            nxt = None
        if nxt is None:
            errors.append(f"position {pos}: {_name(t)} out of place (inside {state})")
            nxt = state
        expected[pos] = SPECIAL_TOKEN_WEIGHTS.get(t, 0.0) if t in _ASSISTANT_TAGS else 0.0
        state = nxt
        previous_end = pos + 1
    if previous_end < n:
        trains = _TEXT[state]
        if trains is None:
            errors.append(f"position {previous_end}: text after the last block")
        else:
            expected[previous_end:] = CONTENT_WEIGHT if trains else 0.0
    complete = state == "top" and int(tokens[-1]) == EOT
    return EpisodeWalk(expected, is_tag, errors, False, complete)


def _walk_with_separators(tokens: np.ndarray, separators: tuple[int, ...]) -> EpisodeWalk:
    """walk_episode of the episode without the separator tokens that directly follow a closed
    top-level block (or <myPT_eot>); those get weight 0 and are tags for the checks."""
    sep = np.isin(tokens, np.array(separators, dtype=tokens.dtype))
    closers = np.isin(tokens, np.array([S_, U_, AC_, TR_, A_, EOT], dtype=tokens.dtype))
    after_closer = np.zeros(tokens.size, dtype=bool)
    after_closer[1:] = closers[:-1]
    drop = sep & after_closer
    keep = ~drop
    inner = walk_episode(tokens[keep])
    expected = np.zeros(tokens.size, dtype=np.float32)
    expected[keep] = inner.expected
    is_tag = np.ones(tokens.size, dtype=bool)
    is_tag[keep] = inner.is_tag
    return EpisodeWalk(expected, is_tag, inner.errors, inner.replay, inner.complete)


_TOP_CLOSERS = (S_, U_, AC_, TR_, A_)


def _cut_start(tokens: np.ndarray, separators: tuple[int, ...]) -> int:
    """Where a tail-truncated episode's first whole top-level block starts (0: not cut)."""
    if tokens.size == 0 or int(tokens[0]) in (S, U) or not np.any(tokens >= ENDOFTEXT_ID):
        return 0
    closers = np.flatnonzero(np.isin(tokens, np.array(_TOP_CLOSERS, dtype=tokens.dtype)))
    if closers.size == 0:
        return tokens.size
    k = int(closers[0]) + 1
    while k < tokens.size and (int(tokens[k]) == EOT or int(tokens[k]) in separators):
        k += 1
    return k


def iter_episodes(ds, max_samples: int | None = None) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(sample, episode_in_sample, tokens, weights)``; packed blocks are cut at segment changes."""
    count = len(ds) if max_samples is None else min(len(ds), max_samples)
    for i in range(count):
        for seg, tokens, weights in sample_episodes(ds[i]):
            yield i, seg, tokens, weights


def sample_episodes(sample: dict) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(episode_in_sample, tokens, weights)`` of one sample (0 for an unpacked one)."""
    tokens, weights, segments = sample["tokens"], sample["weights"], sample["segment_ids"]
    if segments is None:
        yield 0, tokens, weights
        return
    starts = np.flatnonzero(np.concatenate([[True], segments[1:] != segments[:-1]]))
    ends = np.concatenate([starts[1:], [segments.size]])
    for a, b in zip(starts.tolist(), ends.tolist()):
        if segments[a] != 0:
            yield int(segments[a]), tokens[a:b], weights[a:b]


def _check_segments(result: CheckResult, where: str, tokens: np.ndarray, weights: np.ndarray,
                    segments: np.ndarray, pad_id: int = PAD_ID) -> None:
    result.checked += 1
    nonzero = np.flatnonzero(segments)
    if nonzero.size == 0:
        return result.fail(where, "block holds no episode (only padding)")
    last = int(nonzero[-1])
    if np.any(segments[: last + 1] == 0):
        return result.fail(where, f"padding (segment 0) at position {int(np.flatnonzero(segments[:last + 1] == 0)[0])} "
                                  "before the last episode")
    changes = segments[1: last + 1] - segments[:last]
    if segments[0] != 1 or np.any((changes != 0) & (changes != 1)):
        return result.fail(where, f"segment ids are not 1, 2, 3, ... in order (start {int(segments[0])})")
    pad = slice(last + 1, None)
    if np.any(tokens[pad] != pad_id) or np.any(weights[pad] != 0):
        return result.fail(where, f"padding is not {_name(pad_id)} with weight 0")


def check_tokenizer_state(dataset_dir: str | Path) -> None:
    """Raise DatasetFormatError naming ``tokenizer_state.json`` when it is missing, unreadable
    or describes another tokenizer than ours (the legacy MyPT layout is accepted)."""
    from data_modules.episode_format import TOKENIZER_STATE_FILE, DatasetFormatError, load_tokenizer_state
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    path = Path(dataset_dir) / TOKENIZER_STATE_FILE
    remake = "re-prepare the dataset with tools/prepare_sft.py, which records the tokenizer it used"
    if not path.exists():
        raise DatasetFormatError(path, f"missing: nothing says which tokenizer made these token ids; {remake}")
    state = load_tokenizer_state(dataset_dir)
    try:
        get_tokenizer().check_state_dict(state, where=str(path))
    except ValueError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise DatasetFormatError(path, f"{reason}: the dataset was made with another tokenizer; {remake}") from None
    except (TypeError, AttributeError) as exc:  # a field of the wrong JSON type
        raise DatasetFormatError(path, f"malformed field ({exc}); {remake}") from None


def validate_dataset(dataset_dir: str | Path, max_samples: int | None = None,
                     protocol: str | None = None) -> list[CheckResult]:
    """Run every check; returns one result per name in CHECKS. ``protocol``: the profile the
    dataset was made with (None: from its metadata, else ours)."""
    from mypt_lightning.tokens.protocol_profiles import get_profile, profile_from_metadata

    from data_modules.episode_format import DatasetFormatError, find_shard_dirs, list_splits, load_metadata
    from data_modules.episode_reader import EpisodeDataset

    root = Path(dataset_dir)
    results = {name: CheckResult(name) for name in CHECKS}
    datasets = {}
    integrity = results["integrity"]
    try:
        splits = list_splits(root)
    except DatasetFormatError as exc:
        splits = []
        integrity.fail(str(root), str(exc))
    if "train" not in splits:  # training reads train/; a dataset without it is not usable
        integrity.checked += 1
        integrity.fail(str(root / "train"), f"split 'train' is missing (splits with data: {splits or 'none'})")
    for split in splits:
        integrity.checked += 1
        try:
            datasets[split] = EpisodeDataset(root, split=split, check_tokens=True)
        except (DatasetFormatError, OSError, ValueError) as exc:
            integrity.fail(split, str(exc))
    if "train" in datasets and len(datasets["train"]) == 0:  # well-formed, but training refuses it
        integrity.fail(str(datasets["train"].split_dir), "split 'train' holds no samples: nothing to train on")
    try:
        meta = load_metadata(root).raw
    except DatasetFormatError as exc:
        meta = {}
        if not splits:  # otherwise opening each split already reported it
            integrity.fail(str(root), str(exc))
    limit = meta.get("length_limit")
    truncation_expected = isinstance(limit, dict) and bool(limit.get("truncated"))
    profile = get_profile(protocol) if protocol is not None else (profile_from_metadata(meta) or get_profile())
    tail_cut = isinstance(limit, dict) and limit.get("policy") == "truncate_tail" and bool(limit.get("truncated"))

    tok_result = results["tokenizer"]
    tok_result.checked = 1
    try:
        check_tokenizer_state(root)
    except DatasetFormatError as exc:
        tok_result.fail(str(exc.path), exc.reason)
    except OSError as exc:
        tok_result.fail(str(root / "tokenizer_state.json"), str(exc))

    mask_files = results["mask_files"]
    for split in datasets:
        for shard in find_shard_dirs(root / split):
            mask, weighted = shard / "mask.bin", shard / "mask_weighted.bin"
            if mask.exists() and weighted.exists() and mask.stat().st_size * 4 == weighted.stat().st_size:
                mask_files.checked += 1
                m, w = np.fromfile(mask, np.uint8), np.fromfile(weighted, np.float32)
                bad = np.flatnonzero(m != (w > 0))
                if bad.size:
                    mask_files.fail(str(shard), f"position {int(bad[0])}: mask.bin {int(m[bad[0]])} but weight {float(w[bad[0]])}")

    if integrity.failures:
        for name in ("structure", "mask_direction", "mask_alignment", "segment_ids", "eot_trained"):
            results[name].not_run = "integrity failed"
        return [results[n] for n in CHECKS]

    for split, ds in datasets.items():
        weighted = ds.weighted
        if ds.packed:
            count = len(ds) if max_samples is None else min(len(ds), max_samples)
            for i in range(count):
                s = ds[i]
                _check_segments(results["segment_ids"], f"{split} block {i}", s["tokens"], s["weights"], s["segment_ids"],
                                profile.pad_id)
        # the original packer kept the LAST block_size tokens of a longer episode, silently
        may_be_cut = tail_cut or (profile.legacy and ds.packed)
        tagged = _tagged_prompts(profile)
        for i, seg, tokens, weights in iter_episodes(ds, max_samples):
            tokens = _untag_builtin_system(tokens, tagged)
            where = f"{split} sample {i}" + (f" episode {seg}" if ds.packed else "")
            cut = 0
            if may_be_cut and tokens.size >= (ds.block_size if ds.packed and not tail_cut else int(limit["tokens"])):
                cut = _cut_start(tokens, profile.separator_ids)
            _check_episode(results, where, tokens, weights, weighted, truncation_expected,
                           profile.separator_ids, cut)
    return [results[n] for n in CHECKS]


def _tagged_prompts(profile) -> list[np.ndarray]:
    """Legacy profiles: the original's built-in system prompts whose tag strings it encoded as
    tags (protocol_profiles.TAGGED_LEGACY_PROMPTS); none for ours."""
    if not profile.legacy:
        return []
    from mypt_lightning.tokens.protocol_profiles import tagged_prompt_ids

    return [np.asarray(ids, dtype=np.int64) for ids in tagged_prompt_ids()]


def _untag_builtin_system(tokens: np.ndarray, tagged: list[np.ndarray]) -> np.ndarray:
    """An episode opening with <myPT_system>PROMPT</myPT_system>, PROMPT one of ``tagged``: a copy
    whose tags inside that system block read as text (id 0), so the walk accepts them; anything
    else unchanged. The weights are checked as for any system text (0)."""
    for ids in tagged:
        k = ids.size
        if (tokens.size > k + 1 and int(tokens[0]) == S and int(tokens[k + 1]) == S_
                and np.array_equal(tokens[1:k + 1].astype(np.int64), ids)):
            out = tokens.copy()
            inner = out[1:k + 1]
            inner[inner >= ENDOFTEXT_ID] = 0
            return out
    return tokens


def _check_episode(results: dict[str, CheckResult], where: str, tokens: np.ndarray, weights: np.ndarray,
                   weighted: bool, truncation_expected: bool, separators: tuple[int, ...] = (),
                   cut: int = 0) -> None:
    if cut:  # a tail-truncated episode: its broken beginning is taken as it is
        rest = walk_episode(tokens[cut:], separators)
        head = weights[:cut] if weighted else (weights[:cut] > 0).astype(np.float32)
        walk = EpisodeWalk(np.concatenate([head.astype(np.float32), rest.expected]),
                           np.concatenate([np.ones(cut, dtype=bool), rest.is_tag]),
                           [e for e in rest.errors], rest.replay, rest.complete)
    else:
        walk = walk_episode(tokens, separators)
    for name in ("structure", "mask_direction", "mask_alignment", "eot_trained"):
        results[name].checked += 1
    errors = list(walk.errors)
    inside = np.flatnonzero(tokens == ENDOFTEXT_ID)
    if inside.size and not walk.replay:
        errors.append(f"position {int(inside[0])}: <|endoftext|> inside an episode")
    if not walk.replay and not walk.complete and not truncation_expected:
        errors.append("episode does not end after </myPT_assistant><myPT_eot> (unclosed block)")
    if errors:
        results["structure"].fail(where, "; ".join(errors[:3]))
    expected = walk.expected if weighted else (walk.expected > 0).astype(np.float32)
    trained, want = weights > 0, expected > 0
    text = ~walk.is_tag
    wrong = np.flatnonzero(text & (trained != want))
    if wrong.size:
        p = int(wrong[0])
        results["mask_direction"].fail(where, f"position {p}: text token weight {float(weights[p]):g}, expected "
                                              f"{'trained' if want[p] else 'masked (0)'}")
    off = np.flatnonzero(weights != expected)
    if off.size:
        p = int(off[0])
        what = _name(tokens[p]) if walk.is_tag[p] else "content token"
        results["mask_alignment"].fail(where, f"position {p}: {what} has weight {float(weights[p]):g}, "
                                              f"expected {float(expected[p]):g}")
    eots = np.flatnonzero(tokens == EOT)
    if eots.size and np.any(weights[eots] <= 0):
        results["eot_trained"].fail(where, f"<myPT_eot> at position {int(eots[weights[eots] <= 0][0])} has weight 0")
    elif not walk.replay and not _ends_with_eot(tokens, separators) and not truncation_expected:
        results["eot_trained"].fail(where, "does not end with <myPT_eot>")


def _ends_with_eot(tokens: np.ndarray, separators: tuple[int, ...]) -> bool:
    last = tokens.size - 1
    while last > 0 and int(tokens[last]) in separators:
        last -= 1
    return last >= 0 and int(tokens[last]) == EOT


def format_results(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        status = "PASS" if r.passed else ("SKIP" if r.not_run else "FAIL")
        detail = f"not run: {r.not_run}" if r.not_run else f"{r.checked} checked, {r.failures} failed"
        lines.append(f"{status}  {r.name:<15} {detail}")
        lines += [f"        {e}" for e in r.examples]
    return "\n".join(lines)


def summary_dict(results: list[CheckResult]) -> dict[str, Any]:
    return {r.name: {"passed": r.passed, "checked": r.checked, "failures": r.failures, "examples": r.examples,
                     "not_run": r.not_run} for r in results}
