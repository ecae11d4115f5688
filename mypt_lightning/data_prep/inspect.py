"""Look inside a binary episode dataset: statistics and decoded samples with their weights.

``inspect_dataset(dir, show_samples=5)`` returns a text report: per split the sample and
episode counts, a length histogram (episodes, not blocks), the supervised fraction and the
weight distribution, and for packed datasets the packing efficiency and episodes per block.
Samples are decoded with every change of weight marked (``[w=0]``, ``[w=1]``, ``[w=2]``)
or, with ``color=True``, masked text dimmed and trained text green (bold for weight > 1).
Token ids >= the vocabulary size are counted and reported as problems (``inspect_report``);
the command line then exits 1, as validate_sft_dataset does for a failed check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE, VOCAB_SIZE

from .validate import sample_episodes

_BINS = (1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_DIM, _GREEN, _BOLD, _RESET = "\033[2m", "\033[32m", "\033[1;32m", "\033[0m"


def histogram(lengths: np.ndarray, width: int = 40) -> list[str]:
    """Text histogram of episode lengths over power-of-two bins."""
    if lengths.size == 0:
        return ["  (no episodes)"]
    low, high = int(lengths.min()), int(lengths.max())
    edges = [b for b in _BINS if b <= high]
    while len(edges) > 1 and edges[1] <= low:  # no empty leading bins
        edges.pop(0)
    edges.append(high + 1)
    counts, _ = np.histogram(lengths, bins=edges)
    peak = max(int(counts.max()), 1)
    return [f"  {lo:>6}-{hi - 1:<6} {int(c):>9}  {'#' * max(int(c > 0), round(width * int(c) / peak))}"
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)]


def highlight(tokens: np.ndarray, weights: np.ndarray, tokenizer, color: bool) -> str:
    """Decoded text; weights shown as ``[w=x]`` markers or as colours. Ids outside the
    embedding (a damaged dataset) show as ``<INVALID_ID_n>``."""
    invalid = np.flatnonzero(tokens >= VOCAB_SIZE)
    if invalid.size:
        parts, start = [], 0
        for p in invalid.tolist():
            if p > start:
                parts.append(highlight(tokens[start:p], weights[start:p], tokenizer, color))
            parts.append(f"<INVALID_ID_{int(tokens[p])}>")
            start = p + 1
        if start < len(tokens):
            parts.append(highlight(tokens[start:], weights[start:], tokenizer, color))
        return "".join(parts)

    from mypt_lightning.tokens.protocol import render

    if not color:
        return render(tokens, weights, tokenizer=tokenizer)
    out, start = [], 0
    changes = np.flatnonzero(np.diff(weights)) + 1
    for end in list(changes.tolist()) + [len(tokens)]:
        w = float(weights[start])
        text = render(tokens[start:end], tokenizer=tokenizer)
        out.append((_DIM if w == 0 else _GREEN if w <= 1 else _BOLD) + text + _RESET)
        start = end
    return "".join(out)


@dataclass
class InspectReport:
    text: str
    problems: list[str] = field(default_factory=list)  # findings that make the CLI exit 1


def inspect_dataset(dataset_dir: str | Path, *, show_samples: int = 5, splits: list[str] | None = None,
                    color: bool = False, max_samples: int | None = None) -> str:
    """The report text (see :func:`inspect_report` for the problems found as well)."""
    return inspect_report(dataset_dir, show_samples=show_samples, splits=splits, color=color,
                          max_samples=max_samples).text


def inspect_report(dataset_dir: str | Path, *, show_samples: int = 5, splits: list[str] | None = None,
                   color: bool = False, max_samples: int | None = None) -> InspectReport:
    """Statistics and decoded samples; token ids >= the vocabulary size are reported as problems.
    An unreadable dataset raises DatasetFormatError naming the file."""
    from data_modules.episode_format import list_splits, load_metadata
    from data_modules.episode_reader import EpisodeDataset
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    root = Path(dataset_dir)
    tok = get_tokenizer()
    meta = load_metadata(root)
    raw = meta.raw
    packed, weighted, block_size = _layout(root, meta, splits or list_splits(root))
    lines = [f"dataset {root}: {'packed (block ' + str(block_size) + ')' if packed else 'unpacked'}, "
             f"{'weighted' if weighted else 'binary'} mask, tokenizer {raw.get('tokenizer') or _tokenizer_name(root)}",
             f"created by: {raw.get('command') or _legacy_script(raw) or '(unknown command)'}"]
    from mypt_lightning.tokens.protocol_profiles import profile_from_metadata

    profile = profile_from_metadata(raw)
    if profile is not None and profile.legacy:
        lines.append(f"protocol: {profile.name} (a MyPT legacy serialization; validate with --protocol {profile.name})")
    sources = raw.get("sources")
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict):
            lines.append(f"source {source.get('path')} sha256 {str(source.get('sha256'))[:12]}…")
    problems: list[str] = []
    for split in splits or list_splits(root):
        ds = EpisodeDataset(root, split=split, check_tokens=False)
        lengths, per_block, weights_seen = [], Counter(), Counter()
        real = supervised = 0
        samples_shown = []
        bad_ids, first_bad = 0, None
        count = len(ds) if max_samples is None else min(len(ds), max_samples)
        for i in range(count):
            sample = ds[i]
            out_of_vocab = np.flatnonzero(sample["tokens"] >= TOKENIZER_VOCAB_SIZE)
            if out_of_vocab.size:
                bad_ids += int(out_of_vocab.size)
                if first_bad is None:
                    first_bad = (i, int(out_of_vocab[0]), int(sample["tokens"][out_of_vocab[0]]))
            for seg, tokens, weights in sample_episodes(sample):
                lengths.append(tokens.size)
                real += tokens.size
                supervised += int(np.count_nonzero(weights))
                values, counts = np.unique(weights, return_counts=True)
                weights_seen.update(dict(zip(values.tolist(), counts.tolist())))
                per_block[i] += 1
                if len(samples_shown) < show_samples:
                    samples_shown.append((i, seg, tokens, weights))
        lengths_arr = np.array(lengths, dtype=np.int64)
        sample_lengths = ds.sample_lengths()
        total = int(sum(int(sample_lengths[i]) for i in per_block)) if ds.packed else real
        lines += ["", f"== {split}: {len(ds)} samples, {lengths_arr.size} episodes, {ds.num_tokens} tokens"
                      + (" (first " + str(max_samples) + " samples inspected)" if max_samples and max_samples < len(ds) else "")]
        if bad_ids:
            i, pos, value = first_bad
            problem = (f"{split}: {bad_ids} token id(s) >= the vocabulary size {TOKENIZER_VOCAB_SIZE} "
                       f"(first: id {value} in sample {i} at position {pos}); the dataset is damaged")
            problems.append(problem)
            lines.append(f"PROBLEM: {problem}")
        if lengths_arr.size:
            lines.append(f"episode length: min {lengths_arr.min()}, mean {lengths_arr.mean():.1f}, "
                         f"p50 {int(np.percentile(lengths_arr, 50))}, p95 {int(np.percentile(lengths_arr, 95))}, "
                         f"max {lengths_arr.max()}")
        lines += histogram(lengths_arr)
        lines.append(f"supervised fraction: {supervised / real:.1%} of {real} episode tokens" if real else
                     "supervised fraction: n/a")
        lines.append("weights: " + ", ".join(f"{w:g}: {n}" for w, n in sorted(weights_seen.items())))
        if ds.packed and per_block:
            counts = np.array(list(per_block.values()))
            lines.append(f"packing efficiency: {real / total:.1%} of block tokens are real; episodes per block: "
                         f"mean {counts.mean():.1f}, min {counts.min()}, max {counts.max()}")
        for i, seg, tokens, weights in samples_shown:
            label = f"sample {i}" + (f", episode {seg} of the block" if ds.packed else "")
            lines += ["", f"--- {split} {label} ({tokens.size} tokens, {int(np.count_nonzero(weights))} trained)",
                      highlight(tokens, weights, tok, color)]
    return InspectReport("\n".join(lines), problems)


def _layout(root: Path, meta, splits: list[str]) -> tuple[bool, bool, int | None]:
    """Packed?, weighted?, block size: from the files (segment_ids.bin, mask_weighted.bin, the
    index) as the reader sees them; a MyPT original's metadata does not say."""
    from data_modules.episode_format import DatasetFormatError
    from data_modules.episode_reader import EpisodeDataset

    for split in splits:
        try:
            ds = EpisodeDataset(root, split=split, check_tokens=False)
        except (DatasetFormatError, OSError, ValueError):  # the split loop below reports it
            continue
        return ds.packed, ds.weighted, ds.block_size
    return meta.packed, meta.weighted, meta.block_size


def _tokenizer_name(root: Path) -> str | None:
    """Name of the tokenizer in tokenizer_state.json (MyPT: ``token_kind`` "gpt2" = r50k_base + its tags)."""
    from mypt_lightning.errors import UserError
    from mypt_lightning.jsonio import loads_strict

    path = root / "tokenizer_state.json"
    try:
        state = loads_strict(path.read_bytes(), str(path))
    except (OSError, UserError):  # missing or broken: validate's tokenizer check names it
        return None
    if not isinstance(state, dict):
        return None
    name = state.get("name") or state.get("tokenizer")
    if name:
        return str(name)
    if state.get("token_kind") == "gpt2":
        return "gpt2 (MyPT tokenizer state: r50k_base + the 19 MyPT tags)"
    return None


def _legacy_script(raw: dict) -> str | None:
    lineage = raw.get("lineage")
    context = lineage.get("creation_context") if isinstance(lineage, dict) else None
    if isinstance(context, dict) and context.get("script"):
        return f"{context['script']} (MyPT)"
    return None

