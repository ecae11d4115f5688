#!/usr/bin/env python
"""Packing fill: best-fit decreasing (prepare_sft) vs next-fit greedy (the original MyPT scripts).

    python benchmarks/bench_packing.py                    # phases 1-6 profiles, blocks of 4096 and 1024
    python benchmarks/bench_packing.py --episodes 50000 --block_sizes 4096

Episode lengths come from lognormal profiles of the curriculum phases
(``mypt_lightning.data_prep.synthetic.PROFILES``: phase 1 ~30 tokens, phase 3 ~250,
phase 6 ~800), clipped to the block. Fill = real tokens / (blocks x block size); both
packers allow at most 255 episodes per block. Goal (issue 3): >= 98% for phases 1-5.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=20_000_000, help="tokens per profile (sets the episode count)")
    p.add_argument("--block_sizes", type=int, nargs="+", default=[4096, 1024])
    p.add_argument("--phases", nargs="+", default=["phase1", "phase2", "phase3", "phase4", "phase5", "phase6"])
    args = p.parse_args()

    from data_modules.packing import pack_best_fit_decreasing, pack_next_fit, packing_fill
    from mypt_lightning.data_prep.synthetic import PROFILES, episode_lengths

    print("| phase | block | episodes | mean length | next-fit fill | BFD fill | BFD blocks saved | BFD time | goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for block in args.block_sizes:
        for phase in args.phases:
            median = PROFILES[phase][0]
            n = max(1000, args.tokens // max(median, 1))
            lengths = episode_lengths(phase, n, seed=0, max_length=block)
            t = time.perf_counter()
            bfd = pack_best_fit_decreasing(lengths, block)
            t_bfd = time.perf_counter() - t
            nf = pack_next_fit(lengths, block)
            f_bfd, f_nf = packing_fill(lengths, bfd, block), packing_fill(lengths, nf, block)
            goal = "" if phase == "phase6" else ("met" if f_bfd >= 0.98 else "NOT met")
            print(f"| {phase} | {block} | {n:,} | {lengths.mean():.0f} | {f_nf:.2%} | {f_bfd:.2%} | "
                  f"{1 - len(bfd) / len(nf):.1%} | {t_bfd:.2f} s | {goal} |")


if __name__ == "__main__":
    main()
