#!/usr/bin/env python
"""SFT training, side by side: TRL's SFTTrainer against our run.py, same model, same weights, same tokens.

    pip install -e .[bench]                                   # trl (not a runtime dependency)
    python benchmarks/bench_vs_trl.py                         # d=256, 4 layers, 30 steps, 2 rounds
    python benchmarks/bench_vs_trl.py --steps 20 --rounds 1 --variants packed
    python benchmarks/bench_vs_trl.py --profile               # where one step's time goes, both models

What is shared, so that only the trainer differs:

    tokens     episodes from the project's generators (phase-1 format lock + phase-3 RAG chat,
               EN/DE), tokenized ONCE by tools/prepare_sft.py into an unpacked and a packed
               dataset (--block tokens per block, best-fit decreasing). TRL gets the unpacked
               train split's token ids and completion mask as a pre-tokenized datasets.Dataset
               (input_ids + completion_mask, completion_only_loss): the same episodes, the same
               supervised positions. TRL packs them itself (packing=True, its "bfd" strategy,
               padding-free with position ids) for the packed rows.
    weights    one random MyPT init, saved (checkpoint.save_exported) for run.py's init_from and
               exported with mypt_lightning.weights.hf_export for LlamaForCausalLM.from_pretrained.
    recipe     AdamW lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.05, 3 warmup steps,
               cosine to 10%, grad clip 1.0, float32, no dropout/NEFTune, batch --batch_size rows,
               no gradient accumulation, data loading in the main process (num_workers 0).

Each run is a fresh process (startup included in the wall time); rounds alternate which trainer
goes first. Reported per run: wall time, steady train tokens/s and supervised tokens/s (steps
2..N, real tokens only: padding is not counted), peak RSS of the process (os.wait4) and the
loss at matching steps. Both count a token as supervised when it is a loss target (TRL:
labels != -100 after the shift; ours: loss weight > 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LR, WARMUP, MIN_LR_RATIO, WEIGHT_DECAY, BETAS, EPS, CLIP = 1e-3, 3, 0.1, 0.05, (0.9, 0.95), 1e-8, 1.0


# ============================================================================ shared inputs


def prepare(work: Path, args) -> dict:
    """Datasets (unpacked, packed, TRL's copy) and the initial weights, built once per --work."""
    import torch

    data = work / "data"
    unpacked, packed = data / "unpacked", data / "packed"
    if not (packed / "dataset_metadata.json").exists():
        data.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        run = lambda *cmd: subprocess.run([py, *map(str, cmd)], cwd=ROOT, check=True,  # noqa: E731
                                          stdout=subprocess.DEVNULL)
        run("tools/generate_format_lock_dataset.py", "--output", data / "format_lock.jsonl",
            "--num_examples", args.episodes // 2, "--seed", 0, "--language", "mixed")
        run("tools/generate_rag_chat_sft.py", "--output", data / "rag_chat.jsonl",
            "--num_examples", args.episodes - args.episodes // 2, "--seed", 0, "--language", "mixed")
        inputs = ["--input", data / "format_lock.jsonl", "--input", data / "rag_chat.jsonl"]
        common = ["--val_split", 0.02, "--seed", 0, "--truncate_long", "--no_progress"]
        run("tools/prepare_sft.py", *inputs, "--output_dir", unpacked, "--max_length", args.block, *common)
        run("tools/prepare_sft.py", *inputs, "--output_dir", packed, "--enable_packing", "--pack_block_size",
            args.block, *common)
    trl_data = data / "trl_train"
    if not trl_data.exists():
        from datasets import Dataset, disable_progress_bars

        from data_modules import EpisodeDataset

        disable_progress_bars()

        episodes = EpisodeDataset(unpacked, "train")
        rows = {"input_ids": [], "completion_mask": []}
        for i in range(len(episodes)):
            sample = episodes[i]
            rows["input_ids"].append(sample["tokens"].tolist())
            rows["completion_mask"].append((sample["weights"] > 0).astype(int).tolist())
        Dataset.from_dict(rows).save_to_disk(str(trl_data))
    init = work / f"init_d{args.n_embd}_l{args.n_layer}"
    if not (init / "hf" / "config.json").exists():
        from mypt_lightning.weights.checkpoint import save_exported
        from mypt_lightning.weights.hf_export import export_hf
        from mypt_lightning.model import MyPT, MyPTConfig

        torch.manual_seed(0)
        model = MyPT(MyPTConfig.tiny(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer,
                                     block_size=args.block))
        save_exported(model, init / "mypt")
        export_hf(init / "mypt", init / "hf")
    return {"unpacked": unpacked, "packed": packed, "trl_data": trl_data, "init_mypt": init / "mypt",
            "init_hf": init / "hf"}


def dataset_stats(paths: dict) -> dict:
    from data_modules import EpisodeDataset

    out = {}
    for kind in ("unpacked", "packed"):
        ds = EpisodeDataset(paths[kind], "train")
        sup = sum(int((ds[i]["weights"][1:] > 0).sum()) for i in range(len(ds)))
        out[kind] = {"rows": len(ds), "tokens": ds.num_tokens, "supervised": sup}
    return out


# ============================================================================ workers (one process per run)


class StepRecorder:
    """Per optimizer step: end time, real input tokens, supervised targets, loss."""

    def __init__(self, out: str | None = None):
        self.out = out
        self.steps: list[dict] = []
        self._tokens = self._supervised = 0

    def batch(self, tokens: int, supervised: int) -> None:
        self._tokens += tokens
        self._supervised += supervised

    def step(self, loss: float | None) -> None:
        self.steps.append({"t": time.perf_counter(), "tokens": self._tokens, "supervised": self._supervised,
                           "loss": loss})
        self._tokens = self._supervised = 0

    def write(self) -> None:
        if self.out:
            Path(self.out).write_text(json.dumps({"steps": self.steps}))


def _lightning_callback():
    import lightning as L

    class OursRecorder(L.Callback):
        """Added to run.py through Hydra (+callbacks.bench._target_=...): counts what ours trains on."""

        def __init__(self, out: str, profile_step: int | None = None, profile_out: str | None = None):
            self.rec = StepRecorder(out)
            self.prof = StepProfiler(profile_out, profile_step) if profile_step else None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.prof:
                self.prof.begin(len(self.rec.steps) + 1)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.rec.batch(int(batch["seq_lengths"].sum()), int((batch["loss_weights"] > 0).sum()))
            loss = pl_module.last_step_metrics.get("train/loss")
            self.rec.step(loss)
            if self.prof:
                self.prof.end(len(self.rec.steps))

        def on_train_end(self, trainer, pl_module):
            self.rec.write()

    return OursRecorder


def OursRecorder(out: str, profile_step: int | None = None, profile_out: str | None = None):  # noqa: N802
    """The Lightning callback (Hydra instantiates this name)."""
    return _lightning_callback()(out, profile_step, profile_out)


def worker_trl(args) -> int:
    """One TRL SFTTrainer run, in this process."""
    import torch
    from datasets import load_from_disk
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from mypt_lightning.tokens.special_tokens import ENDOFTEXT_ID

    if args.threads:
        torch.set_num_threads(args.threads)
    rec = StepRecorder(args.out)
    # The data is pre-tokenized; TRL still wants a tokenizer for its pad token. A one-entry
    # vocabulary names our <|endoftext|> id as the pad (padding is masked out of the loss).
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<|endoftext|>": ENDOFTEXT_ID},
                                                                             unk_token="<|endoftext|>")),
                                        pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    model = LlamaForCausalLM.from_pretrained(args.init_hf, attn_implementation="sdpa", dtype=torch.float32)
    packed = args.variant == "packed"
    config = SFTConfig(
        output_dir=args.run_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATIO}, warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY,
        adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, max_grad_norm=CLIP, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0, seed=1337,
        max_length=args.block, packing=packed, completion_only_loss=True, dataset_num_proc=None,
        disable_tqdm=True, bf16=False, fp16=False,
    )

    prof = StepProfiler(args.profile_out, args.profile_step) if args.profile_step else None

    class Recorder(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and rec.steps:
                rec.steps[-1]["loss"] = float(logs["loss"])

        def on_step_begin(self, a, state, control, **kw):
            if prof:
                prof.begin(len(rec.steps) + 1)

        def on_step_end(self, a, state, control, **kw):
            rec.step(None)
            if prof:
                prof.end(len(rec.steps))

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *a, **kw):
            ids = inputs["input_ids"]
            tokens = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
            rec.batch(tokens, int((inputs["labels"][:, 1:] != -100).sum()))
            return super().training_step(model, inputs, *a, **kw)

    trainer = CountingTrainer(model=model, args=config, train_dataset=load_from_disk(str(args.trl_data)),
                              processing_class=tokenizer, callbacks=[Recorder()])
    trainer.train()
    rec.write()
    return 0


def ours_command(args, paths: dict, variant: str, run_dir: Path, out: Path) -> list[str]:
    overrides = {
        "model": "tiny", "trainer": "cpu", "logger": "none", "data_mix": "none", "phase": "phase3_chat_sft",
        "init_from": str(paths["init_mypt"]), "phase.dataset_dir": str(paths[variant]),
        "paths.output_dir": str(run_dir), "paths.output_root": str(run_dir.parent), "overwrite": "true",
        "model.n_embd": args.n_embd, "model.n_head": args.n_head, "model.n_layer": args.n_layer,
        "model.block_size": args.block, "model.dropout": 0.0, "model.neftune_alpha": 0.0,
        "optim.lr": LR, "optim.warmup_steps": WARMUP, "optim.min_lr_ratio": MIN_LR_RATIO,
        "optim.weight_decay": WEIGHT_DECAY, "optim.betas": f"[{BETAS[0]},{BETAS[1]}]", "optim.eps": EPS,
        "optim.grad_clip": CLIP, "train.max_steps": args.steps, "train.accumulate_grad_batches": 1,
        "train.eval_every_steps": args.steps, "train.checkpoint_every_steps": 10 * args.steps,
        "train.export": "false", "curriculum.run_gate": "false", "data.batch_size": args.batch_size,
        "data.num_workers": 0, "data.max_val_samples": 1, "seed": 1337,
        "callbacks.progress_bar": "null", "callbacks.model_summary": "null", "callbacks.model_checkpoint": "null",
        "+callbacks.bench._target_": "benchmarks.bench_vs_trl.OursRecorder", "+callbacks.bench.out": str(out),
    }
    return [sys.executable, str(ROOT / "run.py"), *[f"{k}={v}" for k, v in overrides.items()]]


def trl_command(args, paths: dict, variant: str, run_dir: Path, out: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "trl", "--variant", variant,
           "--init_hf", str(paths["init_hf"]), "--trl_data", str(paths["trl_data"]), "--run_dir", str(run_dir),
           "--out", str(out), "--steps", str(args.steps), "--batch_size", str(args.batch_size),
           "--block", str(args.block)]
    return cmd + (["--threads", str(args.threads)] if args.threads else [])


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit status, stderr tail) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode, stderr[-3000:]


def summarize(steps: list[dict]) -> dict:
    """Steady throughput over steps 2..N (the first step pays for warm-up)."""
    later = steps[1:]
    seconds = steps[-1]["t"] - steps[0]["t"]
    tokens, supervised = sum(s["tokens"] for s in later), sum(s["supervised"] for s in later)
    return {"train_seconds": seconds, "tokens_per_s": tokens / seconds, "supervised_per_s": supervised / seconds,
            "tokens_per_step": statistics.mean(s["tokens"] for s in steps),
            "supervised_per_step": statistics.mean(s["supervised"] for s in steps),
            "losses": [s["loss"] for s in steps]}


# ============================================================================ profile


class StepProfiler:
    """torch.profiler around one optimizer step (``step``, counted from 1) inside a real run;
    the table of the most expensive ops goes to ``out``."""

    def __init__(self, out: str, step: int, rows: int = 14):
        self.out, self.step, self.rows, self._prof = out, step, rows, None

    def begin(self, step: int) -> None:
        if step == self.step:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU])
            self._prof.__enter__()
            self._start = time.perf_counter()

    def end(self, step: int) -> None:
        if self._prof is not None and step == self.step:
            seconds = time.perf_counter() - self._start
            self._prof.__exit__(None, None, None)
            table = self._prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.rows)
            Path(self.out).write_text(f"step {step}: {seconds * 1000:.0f} ms\n{table}")
            self._prof = None


def profile(args, paths: dict, env: dict, work: Path) -> int:
    """A short run of each trainer with step 3 under torch.profiler (ops by self CPU time)."""
    steps = args.steps
    args.steps = 4
    try:
        for variant in args.variants:
            for who, build in (("ours", ours_command), ("trl", trl_command)):
                run_dir = work / "runs" / f"profile_{who}_{variant}"
                out = work / "runs" / f"profile_{who}_{variant}.json"
                prof = Path(str(out) + ".prof.txt")
                prof.unlink(missing_ok=True)
                cmd = build(args, paths, variant, run_dir, out)
                cmd = cmd + (["+callbacks.bench.profile_step=3", f"+callbacks.bench.profile_out={prof}"]
                             if who == "ours" else ["--profile_step", "3", "--profile_out", str(prof)])
                wall, rss, code, err = run_measured(cmd, env)
                if code != 0 or not prof.exists():
                    print(f"{who} {variant} profile run failed (exit {code}):\n{err}", file=sys.stderr)
                    return 1
                print(f"\n## {who} {variant}, " + prof.read_text())
    finally:
        args.steps = steps
    return 0


# ============================================================================ main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--work", default="/tmp/bench_vs_trl", help="datasets, weights and runs go here (reused)")
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--block", type=int, default=512, help="tokens per packed block / longest episode")
    p.add_argument("--episodes", type=int, default=2000, help="episodes generated (half format lock, half RAG chat)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=4, help="rows per step (episodes unpacked, blocks packed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["unpacked", "packed"], choices=["unpacked", "packed"])
    p.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    p.add_argument("--json", default=None, help="also write every run's numbers here")
    p.add_argument("--profile", action="store_true",
                   help="instead: a 4-step run of each trainer with step 3 under torch.profiler")
    # worker mode (internal)
    p.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    for name in ("init_hf", "trl_data", "run_dir", "out", "profile_out"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--profile_step", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "trl":
        return worker_trl(args)

    work = Path(args.work)
    paths = prepare(work, args)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.profile:
        return profile(args, paths, env, work)
    stats = dataset_stats(paths)
    results: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for variant in args.variants:
            order = ("ours", "trl") if r % 2 == 0 else ("trl", "ours")
            for who in order:
                run_dir = work / "runs" / f"{who}_{variant}_r{r}"
                out = work / "runs" / f"{who}_{variant}_r{r}.json"
                out.unlink(missing_ok=True)
                build = ours_command if who == "ours" else trl_command
                wall, rss, code, err = run_measured(build(args, paths, variant, run_dir, out), env)
                if code != 0 or not out.exists():
                    print(f"{who} {variant} round {r} failed (exit {code}):\n{err}", file=sys.stderr)
                    return 1
                row = {"wall_s": wall, "peak_rss_mib": rss, **summarize(json.loads(out.read_text())["steps"])}
                results.setdefault(f"{who} {variant}", []).append(row)
                print(f"  {who:4} {variant:8} round {r}: wall {wall:6.1f} s, {row['tokens_per_s']:7.0f} tok/s, "
                      f"rss {rss:5.0f} MiB", file=sys.stderr, flush=True)

    import torch
    import transformers
    import trl

    print(f"# SFT on CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads {args.threads or 'default'}), torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}; d={args.n_embd} L={args.n_layer} vocab 50304, block {args.block}, "
          f"batch {args.batch_size}, {args.steps} steps, best of {args.rounds} round(s)")
    for kind, s in stats.items():
        print(f"# {kind} train split: {s['rows']} rows, {s['tokens']} tokens, {s['supervised']} supervised")
    print("| run | wall s | train tokens/s | supervised tokens/s | tokens/step | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    best = {}
    for name, rows in results.items():
        b = best[name] = {"wall_s": min(x["wall_s"] for x in rows), "tokens_per_s": max(x["tokens_per_s"] for x in rows),
                          "supervised_per_s": max(x["supervised_per_s"] for x in rows),
                          "peak_rss_mib": min(x["peak_rss_mib"] for x in rows),
                          "tokens_per_step": rows[0]["tokens_per_step"], "losses": rows[0]["losses"]}
        print(f"| {name} | {b['wall_s']:.1f} | {b['tokens_per_s']:.0f} | {b['supervised_per_s']:.0f} | "
              f"{b['tokens_per_step']:.0f} | {b['peak_rss_mib']:.0f} |")
    for variant in args.variants:
        o, t = best.get(f"ours {variant}"), best.get(f"trl {variant}")
        if o and t:
            print(f"{variant}: ours/trl train tokens/s {o['tokens_per_s'] / t['tokens_per_s']:.2f}x, supervised "
                  f"tokens/s {o['supervised_per_s'] / t['supervised_per_s']:.2f}x, wall {t['wall_s'] / o['wall_s']:.2f}x"
                  f" faster, peak RSS {o['peak_rss_mib'] / t['peak_rss_mib']:.2f}x")
    marks = sorted({1, 2, 5, 10, args.steps // 2, args.steps} & set(range(1, args.steps + 1)))
    print("\n| loss at step | " + " | ".join(str(m) for m in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for name, b in best.items():
        print(f"| {name} | " + " | ".join(f"{b['losses'][m - 1]:.3f}" if b["losses"][m - 1] is not None else "-"
                                          for m in marks) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "datasets": stats, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
