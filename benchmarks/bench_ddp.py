"""DDP throughput on CPU: 2 processes (gloo) against 1 process, same global batch.

Runs the real entry point (`python run.py ...`) twice on a synthetic packed dataset and
reads train/tokens_per_sec from each run's metrics.csv (mean over steps after warm-up).

    python benchmarks/bench_ddp.py                    # d=256, 4 layers, T=512, 12 steps
    python benchmarks/bench_ddp.py --n_embd 512 --steps 20

On a 2-core machine the two DDP ranks share the cores the single process uses with two
threads, so this measures the overhead of gloo all-reduce and process parallelism, not a
speed-up from more hardware.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_modules import DatasetWriter, build_packed_block  # noqa: E402
from mypt_lightning.tokens.tokenizer import get_tokenizer  # noqa: E402


def write_dataset(path: Path, block: int, blocks: int) -> None:
    rng = np.random.default_rng(0)
    with DatasetWriter(path, weighted=False, packed=True, block_size=block, tokenizer_state=get_tokenizer().state_dict()) as writer:
        for split, count in (("train", blocks), ("val", 4)):
            out = writer.split(split)
            for _ in range(count):
                episodes, used = [], 0
                while used < block - 40:
                    n = int(rng.integers(20, 120))
                    n = min(n, block - used)
                    episodes.append((rng.integers(0, 50000, size=n), np.ones(n, dtype=np.float32)))
                    used += n
                out.add_block(*build_packed_block(episodes, block))


def run(args, dataset: Path, out: Path, devices: int, batch: int) -> float:
    overrides = [
        "model=tiny", "trainer=cpu", "logger=csv", "data_mix=none", "init_from=null",
        f"phase.dataset_dir={dataset}", f"hydra.run.dir={out}",
        f"model.n_embd={args.n_embd}", f"model.n_head={args.n_embd // 64}", f"model.n_layer={args.n_layer}",
        f"model.block_size={args.block}", "model.dropout=0", "model.neftune_alpha=0",
        f"train.max_steps={args.steps}", "train.accumulate_grad_batches=1",
        f"train.eval_every_steps={args.steps}", f"train.checkpoint_every_steps={args.steps}", "train.export=false",
        f"data.batch_size={batch}", "data.num_workers=0", "data.max_val_samples=2",
        f"trainer.devices={devices}", "callbacks.progress_bar=null", "callbacks.model_summary=null",
    ]
    if devices > 1:
        overrides.append("trainer.strategy=ddp")
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // devices))}
    start = time.perf_counter()
    subprocess.run([sys.executable, "run.py", *overrides], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(out / "csv" / "metrics.csv") as f:
        rates = [float(r["train/tokens_per_sec"]) for r in csv.DictReader(f)
                 if r.get("train/tokens_per_sec") and int(r["step"]) > args.warmup]
    print(f"  devices={devices}: {np.mean(rates):,.0f} tokens/s (steps {args.warmup + 1}-{args.steps}), wall {wall:.0f}s")
    return float(np.mean(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--global_batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="steps excluded from the mean")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "data", args.block, blocks=args.global_batch * (args.steps + 2))
        print(f"d={args.n_embd}, layers={args.n_layer}, T={args.block}, global batch {args.global_batch}, "
              f"{args.threads} CPU threads in total")
        one = run(args, tmp / "data", tmp / "one", devices=1, batch=args.global_batch)
        two = run(args, tmp / "data", tmp / "two", devices=2, batch=args.global_batch // 2)
        print(f"| processes | tokens/s | relative |\n|---|---|---|\n| 1 | {one:,.0f} | 1.00x |\n| 2 (DDP, gloo) | {two:,.0f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
