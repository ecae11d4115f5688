#!/usr/bin/env python
"""prepare_sft throughput against tiktoken's own batch encoder on the same text.

    python benchmarks/bench_prepare_sft.py                     # 100k phase-3-like episodes, all cores
    python benchmarks/bench_prepare_sft.py --episodes 20000 --workers 1

Baseline: ``encode_ordinary_batch(spans, num_threads=cores)`` on exactly the content
strings prepare_sft encodes (system, context, question, think, answer, cite, tool calls and
results: one BPE call per span, because tags separate them): BPE alone, no JSON, no
validation, no masks, no disk. For reference also one concatenated text per episode
(fewer, longer calls; BPE merges across what would be tag boundaries). prepare_sft does all
of it (read, validate, serialize with tags and weights, split, pack best-fit decreasing
into 4096-token blocks, write an atomic weighted dataset). Baseline and prepare_sft run
alternately (``--rounds`` pairs) and the best run of each is compared, so background load
on a shared machine hits both alike; CPU seconds (all threads and worker processes) are
reported too, since they hardly depend on that load.
Goal (issue 3): prepare_sft >= 70% of the baseline's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def content_spans(record: dict) -> list[str]:
    """The strings prepare_sft encodes for a record, one BPE call each (tags split them)."""
    from mypt_lightning.tokens.protocol import toolcall_json, toolresult_text

    if record.get("_replay") is True:
        return [record["text"]]
    spans = [record["system"]] if record.get("system") else []
    for m in record["messages"]:
        if m["role"] == "assistant_toolcall":
            spans += [m.get("think") or "", toolcall_json(m["name"], m["arguments"])]
        elif m["role"] == "toolresult":
            spans.append(toolresult_text(m["content"]))
        else:
            spans += [m.get("context") or "", m.get("think") or "", m["content"], m.get("cite") or ""]
    return [s for s in spans if s]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    p.add_argument("--block_size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2, help="baseline/prepare pairs; the best of each is reported")
    args = p.parse_args()

    import data_modules.episode_writer  # noqa: F401  (import cost is not throughput)
    from mypt_lightning.data_prep.prepare import PrepareConfig, available_cores, prepare_sft
    from mypt_lightning.data_prep.synthetic import synthetic_episodes
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    cores = args.workers or available_cores()
    enc = get_tokenizer()._enc
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        records = synthetic_episodes(args.episodes, "phase3", seed=0)
        src = work / "phase3.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        spans = [span for r in records for span in content_spans(r)]  # what prepare_sft encodes
        joined = ["".join(content_spans(r)) for r in records]  # one text per episode, for reference
        del records

        def cpu() -> float:
            return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                       for f in ("ru_utime", "ru_stime"))

        def baseline(texts: list[str]) -> tuple[float, float, int]:
            t, c = time.perf_counter(), cpu()
            ids = enc.encode_ordinary_batch(texts, num_threads=cores)
            return time.perf_counter() - t, cpu() - c, sum(map(len, ids))

        cfg = PrepareConfig(inputs=[str(src)], output_dir=str(work / "out"), val_split=0.05, packing=True,
                            block_size=args.block_size, weighted=True, num_workers=cores, progress=False,
                            overwrite=True)

        def prepare() -> tuple[float, float, object]:
            t, c = time.perf_counter(), cpu()
            result = prepare_sft(cfg)
            return time.perf_counter() - t, cpu() - c, result

        runs: dict[str, list[tuple[float, float]]] = {"spans": [], "joined": [], "prepare": []}
        for _ in range(args.rounds):  # interleaved, so background load hits all alike
            seconds, cpu_seconds, content_tokens = baseline(spans)
            runs["spans"].append((seconds, cpu_seconds))
            seconds, cpu_seconds, result = prepare()
            runs["prepare"].append((seconds, cpu_seconds))
            seconds, cpu_seconds, _ = baseline(joined)
            runs["joined"].append((seconds, cpu_seconds))
        best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
        base, base_cpu = best["spans"]
        prep, prep_cpu = best["prepare"]
        meta = result.metadata
        tokens = sum(s["episode_tokens"] for s in meta["split_stats"].values())
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus visible, {cores} used; "
              f"{args.episodes} episodes, {src.stat().st_size / 1e6:.1f} MB JSONL, {tokens} tokens "
              f"({tokens / args.episodes:.0f}/episode with tags), {content_tokens} content tokens")
        print("| what | wall s | episodes/s | MB/s of JSONL | relative (wall) | CPU s | relative (CPU) |")
        print("|---|---|---|---|---|---|---|")
        mb = src.stat().st_size / 1e6
        rows = [("spans", f"tiktoken encode_ordinary_batch({len(spans):,} content spans), {cores} threads"),
                ("joined", f"tiktoken encode_ordinary_batch({args.episodes:,} texts, one per episode), {cores} threads"),
                ("prepare", f"prepare_sft, {cores} workers, packed {args.block_size}, weighted, val 0.05")]
        for key, label in rows:
            wall, cpu_s = best[key]
            listed = ", ".join(f"{w:.2f}" for w, _ in runs[key])
            print(f"| {label} (runs: {listed} s) | {wall:.2f} | {args.episodes / wall:,.0f} | {mb / wall:.1f} | "
                  f"{base / wall:.0%} | {cpu_s:.2f} | {base_cpu / cpu_s:.0%} |")
        fill = meta["packing_efficiency"]["train"]
        print(f"\npacking fill {fill:.2%}, supervised {meta['supervised_fraction']['train']:.1%}; load average "
              f"{os.getloadavg()[0]:.1f}; goal: >= 70% of the baseline (wall) -> "
              f"{'met' if base / prep >= 0.7 else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
