#!/usr/bin/env python
"""Peak memory of prepare_sft as the input grows (1M short episodes at the top end).

    python benchmarks/bench_prepare_memory.py                          # 100k, 300k, 1M phase-1 episodes
    python benchmarks/bench_prepare_memory.py --sizes 1000000 --workers 2

Each size runs prepare_sft (packed into 4096-token blocks, weighted, val 0.05) in a fresh
subprocess, which reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) and that
of its largest worker (``RUSAGE_CHILDREN``, after the pool is joined). "total" is the
parent plus every worker at their peaks (an upper bound). Goal (issue 3): < 2 GB for 1M
short episodes, and flat: growth well below the input size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from mypt_lightning.data_prep.prepare import PrepareConfig, prepare_sft
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
result = prepare_sft(PrepareConfig(inputs=[{src!r}], output_dir={out!r}, val_split=0.05, packing=True,
                                   block_size=4096, weighted=True, num_workers={workers}, progress=False))
elapsed = time.perf_counter() - t
print(json.dumps({{"self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "import_kb": base,
                  "worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "seconds": elapsed,
                  "episodes": result.metadata["counts"]["episodes"],
                  "fill": result.metadata["packing_efficiency"]["train"]}}))
"""


def write_input(path: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT))
    from mypt_lightning.data_prep.synthetic import synthetic_episodes

    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 100_000):
            for r in synthetic_episodes(min(100_000, n - start), "phase1", seed=start):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    p.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = p.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="bench_mem_"))
    try:
        print(f"| episodes | JSONL MB | seconds | episodes/s | parent peak RSS | largest worker peak | "
              f"total (parent + {workers} workers) | fill |")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.sizes:
            src = work / f"p1_{n}.jsonl"
            write_input(src, n)
            out = work / f"out_{n}"
            code = CHILD.format(root=str(ROOT), src=str(src), out=str(out), workers=workers)
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            total = r["self_kb"] + workers * r["worker_kb"]
            print(f"| {r['episodes']:,} of {n:,} | {src.stat().st_size / 1e6:.0f} | {r['seconds']:.1f} | "
                  f"{r['episodes'] / r['seconds']:,.0f} | {r['self_kb'] / 1024:.0f} MB | {r['worker_kb'] / 1024:.0f} MB | "
                  f"{total / 1024:.0f} MB | {r['fill']:.2%} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)
            src.unlink()
            del t
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
