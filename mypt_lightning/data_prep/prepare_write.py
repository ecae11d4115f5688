"""Pass 2 of prepare_sft: write the splits (unpacked or best-fit-decreasing packed) through
``DatasetWriter`` and build the metadata and the printed summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mypt_lightning.errors import UserError

MAX_PER_BLOCK = 255


def _length_stats(lengths: np.ndarray) -> dict[str, Any]:
    if lengths.size == 0:
        return {"min": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    return {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 2),
            "p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max())}


def _write_unpacked(split_writer, store, idx: np.ndarray, bar) -> dict[str, Any]:
    for i in idx.tolist():
        tokens, weights = store.episode(i)
        split_writer.add_episode(tokens, weights)
        bar.update(1)
    return {}


def _write_packed(split_writer, store, idx: np.ndarray, block_size: int, by_group: bool, bar,
                  pad_id: int | None = None) -> dict[str, Any]:
    from data_modules.packing import build_packed_block, pack_best_fit_decreasing

    if by_group:
        names = {v: k for k, v in store.group_ids.items()}
        group_ids = sorted(np.unique(store.group[idx]).tolist(), key=lambda g: (names[g] is None, str(names[g])))
        subsets = [idx[store.group[idx] == g] for g in group_ids]
    else:
        subsets = [idx]
    blocks_total, per_block = 0, []
    for subset in subsets:
        for block in pack_best_fit_decreasing(store.lengths[subset], block_size, MAX_PER_BLOCK):
            pad = {} if pad_id is None else {"pad_id": pad_id}
            tokens, weights, segments = build_packed_block(store.episodes(subset[block].tolist()), block_size, **pad)
            split_writer.add_block(tokens, weights, segments)
            per_block.append(len(block))
            blocks_total += 1
            bar.update(len(block))
    real = int(store.lengths[idx].sum(dtype=np.int64))
    return {"blocks": blocks_total, "fill": round(real / (blocks_total * block_size), 6) if blocks_total else 0.0,
            "episodes_per_block_mean": round(float(np.mean(per_block)), 2) if per_block else 0.0,
            "episodes_per_block_max": int(max(per_block)) if per_block else 0}


def write_dataset(cfg, store, split, overlap_report: dict, sources: list[dict], errors, tokenizer_state: dict,
                  limit: int | None) -> dict[str, Any]:
    """Write train (and val, when it has episodes) atomically; returns the metadata written."""
    from tqdm import tqdm

    from data_modules.episode_writer import DatasetWriter

    out = Path(cfg.output_dir)
    parts = [("train", ~split.is_val)] + ([("val", split.is_val)] if split.num_val else [])
    try:
        writer = DatasetWriter(out, weighted=cfg.weighted, packed=cfg.packing,
                               block_size=cfg.block_size if cfg.packing else None,
                               tokenizer_state=tokenizer_state, sources=sources, command=cfg.command,
                               overwrite=cfg.overwrite)
        with writer:
            split_stats: dict[str, dict[str, Any]] = {}
            for name, mask in parts:
                idx = np.flatnonzero(mask)
                split_writer = writer.split(name)
                disable = None if cfg.progress is None else not cfg.progress
                with tqdm(total=idx.size, unit="ep", desc=f"write {name}", disable=disable, leave=False) as bar:
                    if cfg.packing:
                        profile = cfg.profile()
                        stats = _write_packed(split_writer, store, idx, cfg.block_size, bool(cfg.pack_by_field), bar,
                                              pad_id=profile.pad_id if profile.legacy else None)
                    else:
                        stats = _write_unpacked(split_writer, store, idx, bar)
                real = int(store.lengths[idx].sum(dtype=np.int64))
                stats.update(episodes=int(idx.size), episode_tokens=real,
                             supervised_tokens=split_writer.supervised_tokens,
                             supervised_fraction=round(split_writer.supervised_tokens / real, 6) if real else 0.0,
                             lengths=_length_stats(store.lengths[idx]))
                split_stats[name] = stats
            writer.extra_metadata.update(_extra_metadata(cfg, store, split, overlap_report, errors, limit, split_stats))
    except FileExistsError as exc:
        raise UserError(f"{exc} (pass --overwrite to replace it)") from None
    return json.loads((out / "dataset_metadata.json").read_text(encoding="utf-8"))


def _extra_metadata(cfg, store, split, overlap_report, errors, limit, split_stats) -> dict[str, Any]:
    names = list(split_stats)
    extra = {}
    profile = cfg.profile()
    if profile.legacy:  # recorded only when not the default, so default metadata stays as it was
        extra["protocol"] = {**profile.options(), "pad_id": profile.pad_id}
    return extra | {
        "created_by": "mypt_lightning.data_prep.prepare",
        "weight_scheme": "weighted (docs/design.md section 1)" if cfg.weighted else "binary (1 where docs/design.md section 1 weight > 0)",
        "counts": {"records": store.records, "episodes": store.num, "replay_episodes": store.replay,
                   "bad_records_skipped": errors.count, "too_long_rejected": store.too_long_count,
                   "truncated": store.truncated, **{f"{n}_episodes": split_stats[n]["episodes"] for n in names}},
        "supervised_fraction": {n: split_stats[n]["supervised_fraction"] for n in names},
        "packing_efficiency": {n: split_stats[n]["fill"] for n in names} if cfg.packing else None,
        "packing": ({"algorithm": "best_fit_decreasing", "max_episodes_per_block": MAX_PER_BLOCK,
                     "pack_by_field": cfg.pack_by_field,
                     **{n: {k: split_stats[n][k] for k in ("blocks", "fill", "episodes_per_block_mean",
                                                            "episodes_per_block_max")} for n in names}}
                    if cfg.packing else None),
        "split_stats": split_stats,
        "length_limit": {"tokens": limit, "policy": {None: "reject", "head": "truncate",
                                                     "tail": "truncate_tail"}[cfg.truncation()],
                         "rejected": store.too_long_count, "truncated": store.truncated,
                         "examples": store.too_long, **({"truncated_examples": store.cut} if store.cut else {})},
        "errors": errors.to_dict(),
        "val_split": {"fraction": cfg.val_split, "seed": cfg.seed,
                      "method": "by conversation: episodes sharing a normalised user message (or a "
                                "split_by field value) stay in one split",
                      "split_by_fields": list(cfg.split_by_fields), "groups": split.groups,
                      "target_val_episodes": split.target_val, "notes": split.notes},
        "overlap": overlap_report,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summarize(cfg, metadata: dict[str, Any], elapsed: float, workers: int) -> str:
    c = metadata["counts"]
    lines = []
    for s in metadata["sources"]:
        lines.append(f"input  {s['path']}  sha256 {s['sha256'][:12]}…  {s['episodes']} episodes")
    lines.append(f"read   {c['records']} records: {c['episodes']} episodes ({c['replay_episodes']} replay), "
                 f"{c['bad_records_skipped']} bad records skipped, {c['too_long_rejected']} too long rejected, "
                 f"{c['truncated']} truncated")
    for example in metadata["errors"]["examples"][:3]:
        lines.append(f"       bad: {example}")
    for example in metadata["length_limit"]["examples"][:3]:
        lines.append(f"       too long (limit {metadata['length_limit']['tokens']}): {example}")
    kept = "last" if metadata["length_limit"]["policy"] == "truncate_tail" else "first"
    for example in metadata["length_limit"].get("truncated_examples", [])[:3]:
        lines.append(f"       cut to the {kept} {metadata['length_limit']['tokens']} tokens: {example}")
    vs = metadata["val_split"]
    lines.append(f"split  train {c['train_episodes']} / val {c.get('val_episodes', 0)} episodes "
                 f"(val_split {vs['fraction']}, seed {vs['seed']}, {vs['groups']} conversation groups)")
    for note in vs["notes"]:
        lines.append(f"       note: {note}")
    for kind, r in metadata["overlap"].items():
        label = "user messages" if kind == "user" else kind
        line = f"overlap train/val {label}: {r['shared']} shared ({r['train_distinct']} train, {r['val_distinct']} val)"
        if r.get("examples"):
            line += " e.g. " + "; ".join(repr(e) for e in r["examples"][:3])
        lines.append(line)
    for name, st in metadata["split_stats"].items():
        line = (f"{name:<6} {st['episodes']} episodes, {st['episode_tokens']} tokens, supervised "
                f"{_pct(st['supervised_fraction'])}, length mean {st['lengths']['mean']:.0f} max {st['lengths']['max']}")
        if cfg.packing:
            line += (f"; {st['blocks']} blocks of {cfg.block_size}, fill {_pct(st['fill'])}, "
                     f"{st['episodes_per_block_mean']:.1f} episodes/block (max {st['episodes_per_block_max']})")
        lines.append(line)
    rate = c["episodes"] / elapsed if elapsed > 0 else 0.0
    if "protocol" in metadata:
        lines.append(f"protocol {metadata['protocol']['name']} (legacy MyPT serialization)")
    lines.append(f"wrote  {cfg.output_dir} ({'packed' if cfg.packing else 'unpacked'}, "
                 f"{'weighted' if cfg.weighted else 'binary'} mask) in {elapsed:.1f} s "
                 f"({rate:,.0f} episodes/s, {workers} worker{'s' if workers != 1 else ''})")
    return "\n".join(lines)
