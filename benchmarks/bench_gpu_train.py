#!/usr/bin/env python
"""Training throughput, MFU and peak memory of the 750M model on one GPU (issue 6).

    python benchmarks/bench_gpu_train.py                   # 750M, T=4096, batch 4, all rows
    python benchmarks/bench_gpu_train.py --rows flex_compile,flex_compile_ac
    python benchmarks/bench_gpu_train.py --smoke           # tiny model on CPU: checks the script runs

One step = what the trainer does per micro-batch and optimizer step: bf16 autocast forward
on packed rows (segment ids: episodes never attend to each other, positions restart per
episode), the head only on supervised positions, the weighted loss sum(w*nll)/sum(w),
backward, gradient clipping and a fused AdamW step. Rows, all in one process on the same
batches, interleaved round by round so clock and thermal drift hit every row alike:

    sdpa_dense            SDPA with a dense (B, 1, T, T) block-diagonal mask: the reference
    flex                  FlexAttention block mask (skips fully masked tiles)
    flex_compile          same, model under torch.compile
    flex_compile_ac       same, plus activation checkpointing per block
    flex_ac               FlexAttention, activation checkpointing, eager

Data: "phase-3-like" packed rows built like prepare_sft packs chat episodes: episode
lengths log-normal around ~500 tokens (clipped to 48..3000), best-fit packed into rows of
T tokens, about 40% of each episode's tokens supervised (the assistant turns). Token ids
are random: throughput does not depend on them.

MFU uses the usual formula, as llm-foundry reports it (its 760M config: 35.8% at T=4096):
FLOPs/token = 6 * N + 12 * n_layer * n_embd * T, N = all parameters (the tied
embedding/head counted once), peak = --peak_tflops (989 for H100/H200 SXM, dense bf16).
That formula credits work this trainer does not do (the head on unsupervised positions,
attention across episode boundaries), so a second column reports the FLOPs actually
needed: the head only on supervised tokens and attention only within episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mypt_lightning.training.lit_module import weighted_token_stats  # noqa: E402
from mypt_lightning.model import MyPT, MyPTConfig  # noqa: E402
from mypt_lightning.training.optim import OptimConfig, build_optimizer  # noqa: E402

ROWS = {  # name: (attn_impl, compile, activation checkpointing)
    "sdpa_dense": ("sdpa", False, False),
    "flex": ("flex", False, False),
    "flex_compile": ("flex", True, False),
    "flex_compile_ac": ("flex", True, True),
    "flex_ac": ("flex", False, True),
}


def model_config(args) -> MyPTConfig:
    if args.smoke:
        return MyPTConfig(vocab_size=50304, n_embd=64, n_head=2, n_layer=2, block_size=args.seq_len,
                          rope_scale=1.0, dropout=0.0, neftune_alpha=0.0)
    from omegaconf import OmegaConf

    fields = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "gpt750m.yaml"))
    fields.pop("compile", None)
    fields.update(block_size=args.seq_len, dropout=0.0, neftune_alpha=0.0)
    return MyPTConfig.from_dict(fields)


def phase3_like_rows(batches: int, batch_size: int, T: int, seed: int = 0):
    """Packed rows: (input_ids, labels, weights, segment_ids) per batch, int64/float32 CPU."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        ids = rng.integers(0, 50000, size=(batch_size, T + 1))
        seg = np.zeros((batch_size, T + 1), dtype=np.int64)
        w = np.zeros((batch_size, T + 1), dtype=np.float32)
        for b in range(batch_size):
            pos, segment = 0, 1
            while pos < T + 1:
                n = int(np.clip(rng.lognormal(math.log(500), 0.7), 48, 3000))
                n = min(n, T + 1 - pos)
                seg[b, pos:pos + n] = segment
                answer = int(n * 0.6)  # the last ~40% of an episode: assistant turns
                w[b, pos + answer:pos + n] = 1.0
                pos, segment = pos + n, segment + 1
        # targets are the next token of the same episode; the last token of each episode has none
        same = seg[:, 1:] == seg[:, :-1]
        out.append((torch.from_numpy(ids[:, :-1]), torch.from_numpy(ids[:, 1:]),
                    torch.from_numpy(w[:, 1:] * same), torch.from_numpy(seg[:, :-1])))
    return out


def flops_per_token(config: MyPTConfig, n_params: int, T: int) -> float:
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_embd * T


def needed_flops(config: MyPTConfig, n_params: int, batch) -> float:
    """FLOPs this step needs: matmuls except the head on every token, the head on supervised
    tokens, causal attention within episodes (QK^T and AV, forward + backward = 3x)."""
    _, _, weights, seg = batch
    tokens = seg.numel()
    head = config.vocab_size * config.n_embd
    supervised = int((weights > 0).sum())
    attn = 0.0
    for row in seg:
        _, counts = torch.unique_consecutive(row, return_counts=True)
        attn += float((counts.double() * (counts.double() + 1) / 2).sum())  # causal pairs
    attention = 3 * 2 * 2 * config.n_layer * config.n_embd * attn
    return 6.0 * (n_params - head) * tokens + 6.0 * head * supervised + attention


def build(config: MyPTConfig, row: str, device: torch.device, seed: int):
    attn_impl, compiled, ac = ROWS[row]
    torch.manual_seed(seed)
    with device:
        model = MyPT(MyPTConfig.from_dict({**config.to_dict(), "attn_impl": attn_impl,
                                           "activation_checkpointing": ac}))
    model.train()
    optimizer, _ = build_optimizer(model, OptimConfig(lr=1e-5, warmup_steps=0), max_steps=1000)
    return (torch.compile(model) if compiled else model), model, optimizer


def train_step(model, optimizer, batch, device, dtype) -> float:
    ids, labels, weights, seg = (t.to(device, non_blocking=True) for t in batch)
    supervised = weights > 0
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(ids, segment_ids=seg, predict_mask=supervised)
    stats = weighted_token_stats(logits, labels[supervised], weights[supervised])
    (stats["nll_sum"] / stats["weight_sum"]).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(stats["nll_sum"].detach() / stats["weight_sum"])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row (compilation happens here)")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, float32, sdpa rows only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.seq_len, args.batch_size, args.steps, args.warmup = min(args.seq_len, 256), 2, 2, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cpu" and not args.smoke:
        sys.exit("bench_gpu_train.py: no CUDA device; use --smoke to check the script on CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"bench_gpu_train.py: unknown rows {unknown}; choose from {list(ROWS)}")
    if args.smoke:
        rows = ["sdpa_dense"]  # FlexAttention has no CPU backward

    config = model_config(args)
    batches = phase3_like_rows(args.warmup + args.steps, args.batch_size, args.seq_len)
    tokens_per_step = args.batch_size * args.seq_len
    results = []
    for row in rows:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            model, plain, optimizer = build(config, row, device, seed=0)
            n_params = sum(p.numel() for p in plain.parameters())
            for batch in batches[: args.warmup]:
                train_step(model, optimizer, batch, device, dtype)
            times, needed = [], []
            for batch in batches[args.warmup:]:
                sync(device)
                start = time.perf_counter()
                loss = train_step(model, optimizer, batch, device, dtype)
                sync(device)
                times.append(time.perf_counter() - start)
                needed.append(needed_flops(config, n_params, batch))
        except torch.cuda.OutOfMemoryError as err:
            results.append({"row": row, "error": f"out of memory: {str(err).splitlines()[0]}"})
            print(f"{row}: out of memory", flush=True)
            del err
            continue
        step = statistics.median(times)
        tps = tokens_per_step / step
        peak = args.peak_tflops * 1e12
        result = {
            "row": row, "step_s": step, "tokens_per_s": tps,
            "mfu": tps * flops_per_token(config, n_params, args.seq_len) / peak,
            "mfu_needed": statistics.median(n / t for n, t in zip(needed, times)) / peak,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "last_loss": loss,
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        del model, plain, optimizer

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\n{name}, torch {torch.__version__}, {n_params / 1e6:.0f}M parameters, batch {args.batch_size} x "
          f"{args.seq_len}, {dtype}, {args.steps} timed steps (median)\n")
    print("| row | step (s) | tokens/s | MFU (6N+12LdT) | MFU (work needed) | peak memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['row']} | {r['error']} | | | | |")
            continue
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
        print(f"| {r['row']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | "
              f"{100 * r['mfu_needed']:.1f}% | {mem} |")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
