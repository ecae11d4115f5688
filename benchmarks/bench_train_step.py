#!/usr/bin/env python
"""Train-step throughput on CPU: MyPT vs transformers' LlamaForCausalLM, and packed vs unpacked.

    python benchmarks/bench_train_step.py                      # d=512, 8 layers, T=1024, batch 1
    python benchmarks/bench_train_step.py --batch_size 2 --steps 3

One train step = forward + cross-entropy + backward + AdamW step, float32. Both models hold
the same weights (ours exported through mypt_lightning.weights.hf_export) and see the same batches,
in one process, steps interleaved across rows so background load hits all alike. Reported: median
step time and tokens/s. Rows:

    mypt unpacked          causal SDPA (is_causal)
    hf llama unpacked      transformers, attn_implementation="sdpa"
    mypt packed            --episodes episodes per row, segment ids, SDPA + dense block mask
    mypt packed (eager)    same, explicit softmax math (--with_eager, for comparison)
    mypt packed (bf16 autocast)  same weights, matmuls in bf16 under torch.autocast (--with_bf16;
                           what trainer.precision=bf16-mixed does on CPU)

--supervised_fraction F scores only that share of positions, as the trainer does (it runs the
vocabulary head and the softmax on supervised positions only); the transformers row, which has no
such option, is then left out. For the tiny demo model the head is most of a step:

    python benchmarks/bench_train_step.py --n_embd 128 --n_layer 2 --n_head 4 --seq_len 512 \
        --batch_size 2 --episodes 8 --supervised_fraction 0.3 --with_bf16 --steps 20

Goals (issue 2): mypt >= 1.0x hf; packed <= 1.3x the cost of unpacked. On a shared machine
the paired ratio (median over rounds of the ratio of two rows' back-to-back steps) and the min
step time are the steadier numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mypt_lightning.model import MyPT, MyPTConfig  # noqa: E402


def packed_segments(batch: int, T: int, episodes: int, gen: torch.Generator) -> torch.Tensor:
    """Segment ids 1..episodes with random episode lengths filling each row exactly."""
    rows = []
    for _ in range(batch):
        cuts = torch.sort(torch.randperm(T - 1, generator=gen)[: episodes - 1] + 1).values
        lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([T])]))
        rows.append(torch.repeat_interleave(torch.arange(1, episodes + 1), lengths))
    return torch.stack(rows)


def build_hf(model: MyPT):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mypt_lightning.weights.hf_export import hf_config_dict, to_hf_state_dict

    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(model), attn_implementation="sdpa", use_cache=False))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf.train()


def make_step(model, forward, scored=None, bf16: bool = False):
    """One train step of ``model``; ``scored`` (bool, like the inputs): the positions the loss
    scores (``forward`` then returns their logits only); ``bf16``: run it under bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=True)

    def step(ids, targets, seg):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(ids, seg)
        if scored is not None:
            targets = targets[scored]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _bf16_flags() -> str:
    """The CPU's bf16 matmul units as /proc/cpuinfo names them (Linux), or 'unknown'."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags if f in ("amx_bf16", "avx512_bf16")) or "none"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_embd", type=int, default=512)
    p.add_argument("--n_layer", type=int, default=8)
    p.add_argument("--n_head", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--episodes", type=int, default=40, help="episodes per packed row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="timed steps per row (interleaved across rows)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no_hf", action="store_true", help="skip the transformers row")
    p.add_argument("--with_eager", action="store_true", help="add a packed row on the eager (explicit math) path")
    p.add_argument("--with_bf16", action="store_true", help="add a packed row under bf16 autocast (bf16-mixed)")
    p.add_argument("--supervised_fraction", type=float, default=1.0,
                   help="share of positions the loss scores, as in training (< 1 leaves out the transformers row)")
    args = p.parse_args(argv)
    if not 0 < args.supervised_fraction <= 1:
        p.error(f"--supervised_fraction must be in (0, 1], got {args.supervised_fraction}")
    torch.set_num_threads(args.threads)
    load_before = f"{os.getloadavg()[0]:.2f}"
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    cfg = MyPTConfig(n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, block_size=args.seq_len,
                     attn_impl="sdpa")
    ours = MyPT(cfg).train()
    B, T = args.batch_size, args.seq_len
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    seg = packed_segments(B, T, args.episodes, gen)
    scored = None
    if args.supervised_fraction < 1:
        scored = torch.rand(B, T, generator=gen) < args.supervised_fraction

    def copy_of(model, **config):
        clone = MyPT(MyPTConfig(**{**cfg.to_dict(), **config})).train()
        clone.load_state_dict(model.state_dict())
        return clone

    rows = {"mypt unpacked": (make_step(ours, lambda x, s: ours(x, predict_mask=scored), scored), None)}
    if not args.no_hf and scored is None:
        hf = build_hf(ours)  # copies the weights; the two models then train independently
        rows["hf llama unpacked"] = (make_step(hf, lambda x, s: hf(input_ids=x).logits), None)
    def packed_step(model, bf16=False):
        return make_step(model, lambda x, s: model(x, segment_ids=s, predict_mask=scored), scored, bf16=bf16), seg

    rows["mypt packed"] = packed_step(ours)
    if args.with_eager:
        rows["mypt packed (eager)"] = packed_step(copy_of(ours, attn_impl="eager"))
    if args.with_bf16:
        rows["mypt packed (bf16 autocast)"] = packed_step(copy_of(ours), bf16=True)

    times: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}  # process CPU seconds: robust to waiting
    for name, (step, s) in rows.items():
        for _ in range(args.warmup):
            step(inputs, targets, s)
    for _ in range(args.steps):  # interleaved: A B C D A B C D ... so background load hits all rows alike
        for name, (step, s) in rows.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step(inputs, targets, s)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    n_params = ours.num_parameters()
    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"# d={args.n_embd} layers={args.n_layer} heads={args.n_head} T={T} batch={B} "
          f"params={n_params / 1e6:.1f}M episodes/packed row={args.episodes} "
          f"scored positions={args.supervised_fraction:g} "
          f"timed steps/row={args.steps}, interleaved")
    base = statistics.median(times["mypt unpacked"])
    cpu_base = statistics.median(cpu["mypt unpacked"])
    print(f"# load average before/after: {load_before} / {os.getloadavg()[0]:.2f}")
    print("| run | median step (s) | min step (s) | tokens/s (median) | time vs mypt unpacked "
          "| CPU s/step (median) | CPU vs mypt unpacked |")
    print("|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {B * T / med:,.0f} | {med / base:.2f}x "
              f"| {cmed:.2f} | {cmed / cpu_base:.2f}x |")
    def paired(a: str, b: str) -> float:
        """Median over rounds of time(a) / time(b): steps of one round ran back to back, under similar load."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    if "hf llama unpacked" in times:
        ratio = statistics.median(times["hf llama unpacked"]) / base
        best = min(times["hf llama unpacked"]) / min(times["mypt unpacked"])
        by_cpu = statistics.median(cpu["hf llama unpacked"]) / cpu_base
        print(f"mypt speed vs hf: {paired('hf llama unpacked', 'mypt unpacked'):.2f}x paired, {ratio:.2f}x by "
              f"median, {best:.2f}x by min, {by_cpu:.2f}x by CPU time (goal >= 1.0x)")
    packed = statistics.median(times["mypt packed"]) / base
    packed_min = min(times["mypt packed"]) / min(times["mypt unpacked"])
    packed_cpu = statistics.median(cpu["mypt packed"]) / cpu_base
    print(f"packed cost vs unpacked: {paired('mypt packed', 'mypt unpacked'):.2f}x paired, {packed:.2f}x by "
          f"median, {packed_min:.2f}x by min, {packed_cpu:.2f}x by CPU time (goal <= 1.3x)")
    if "mypt packed (bf16 autocast)" in times:
        low = "mypt packed (bf16 autocast)"
        print(f"bf16 autocast speed vs fp32 (packed): {paired('mypt packed', low):.2f}x paired, "
              f"{min(times['mypt packed']) / min(times[low]):.2f}x by min (> 1: bf16 is faster; "
              f"CPU bf16 units: {_bf16_flags()})")


if __name__ == "__main__":
    main()
