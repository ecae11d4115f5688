"""Data parallel training on 2 CPU processes (gloo): Lightning's DDP strategy, and our
FSDP strategy (mypt_lightning.training.distributed.MyPTFSDPStrategy, which runs on CPU with gloo)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_packed_dataset
from helpers import ROOT, tiny_overrides


def read_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def one_process(run_py_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python run.py ...` as one process (Lightning spawns further ranks itself)."""
    return subprocess.run([sys.executable, *run_py_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def run_training(dataset: Path, out: Path, launch=one_process, **extra) -> subprocess.CompletedProcess:
    """Train the tiny model for 4 steps into ``out``; ``launch(run_py_args, env)`` starts the
    processes (tests/test_launchers.py passes torchrun and an srun stand-in)."""
    overrides = tiny_overrides(
        dataset, out, logger="csv",
        **{"model.dropout": 0.0, "model.neftune_alpha": 0, "train.max_steps": 4, "data.num_workers": 0,
           "train.eval_every_steps": 2, "hydra.run.dir": str(out), **extra},
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = launch(["run.py", *overrides], env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def assert_same_weights(a, b, **tolerance):
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, msg=name, **tolerance)


def assert_same_as_single_process(single_run: Path, parallel_run: Path) -> None:
    """Same per-step losses, and rank 0 exported the weights the single process learned."""
    from mypt_lightning import load_model

    single, parallel = read_losses(single_run), read_losses(parallel_run)
    assert sorted(single) == sorted(parallel) == [1, 2, 3, 4]
    for step in single:
        assert parallel[step] == pytest.approx(single[step], rel=1e-5), step
    assert_same_weights(load_model(single_run / "export"), load_model(parallel_run / "export"),
                        rtol=1e-4, atol=1e-5)


def test_ddp_two_processes_match_one_process_with_doubled_batch(tmp_path):
    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2})
    ddp = run_training(dataset, tmp_path / "ddp", **{
        "data.batch_size": 1, "trainer.devices": 2, "trainer.strategy": "ddp",
    })
    assert "distributed_backend=gloo" in ddp.stdout + ddp.stderr
    assert_same_as_single_process(tmp_path / "single", tmp_path / "ddp")


def write_unpacked_dataset(path: Path, episodes: dict[str, int], seed: int = 0) -> Path:
    """Unpacked episodes of very different lengths, so dynamically padded batches differ in width."""
    from data_modules import DatasetWriter
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    rng = np.random.default_rng(seed)
    with DatasetWriter(path, weighted=True, packed=False, block_size=64, tokenizer_state=get_tokenizer().state_dict()) as writer:
        for split, count in episodes.items():
            out = writer.split(split)
            for _ in range(count):
                n = int(rng.choice([6, 10, 24, 40, 63]))
                weights = (rng.random(n) > 0.3).astype(np.float32) * rng.choice([1.0, 2.0], size=n)
                weights[-1] = 2.0  # every episode supervises something
                out.add_episode(rng.integers(0, 50000, size=n), weights)
    return path


def test_ddp_ranks_with_batches_of_different_widths_stay_identical(tmp_path):
    """Unpacked data: each rank pads its micro-batches to their own width. The replicas end
    bit-identical, and equal to one process with the doubled batch (the step normaliser
    is one constant, not a per-batch width). In float64 (norms and RoPE stay float32), so
    that Adam does not amplify the rounding of differently shaped matmuls past the tolerance."""
    dataset = write_unpacked_dataset(tmp_path / "data", {"train": 48, "val": 4}, seed=11)
    float64 = {"trainer.precision": "64-true"}
    probes = {"+callbacks.params._target_": "probes.SaveRankParameters", "+callbacks.params.directory": str(tmp_path),
              "+callbacks.widths._target_": "probes.RecordBatchWidths", "+callbacks.widths.directory": str(tmp_path)}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2, **float64})
    run_training(dataset, tmp_path / "ddp", launch=lambda args, _: one_process(args, env), **{
        "data.batch_size": 1, "trainer.devices": 2, "trainer.strategy": "ddp", **probes, **float64})
    widths = [(tmp_path / f"widths_rank{r}").read_text().split("\n") for r in (0, 1)]
    assert sum(a != b for a, b in zip(*widths)) >= 4, widths  # the ranks' micro-batches differ in width
    rank0, rank1 = (torch.load(tmp_path / f"params_rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert_same_as_single_process(tmp_path / "single", tmp_path / "ddp")


def test_each_rank_draws_its_own_dropout_and_neftune_noise(tmp_path):
    """seed_everything seeds every rank alike; rank r > 0 is re-seeded so that ranks do not
    share dropout masks and NEFTune noise (tests/test_faults.py checks that each rank's
    stream is restored on resume)."""
    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    probe = {"+callbacks.rng._target_": "probes.RecordRNGState", "+callbacks.rng.directory": str(tmp_path)}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    run_training(dataset, tmp_path / "ddp", launch=lambda args, _: one_process(args, env), **{
        "data.batch_size": 1, "trainer.devices": 2, "trainer.strategy": "ddp", "train.max_steps": 1, **probe})
    assert (tmp_path / "rng_rank0").read_text() != (tmp_path / "rng_rank1").read_text()


FSDP_ON_CPU = {"trainer": "fsdp", "trainer.accelerator": "cpu", "trainer.devices": 2,
               "trainer.precision": "32-true", "data.batch_size": 1}




def test_fsdp_two_processes_match_one_process_and_sharded_checkpoints_resume(tmp_path):
    from mypt_lightning import load_model
    from mypt_lightning.weights.checkpoint import detect_format

    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    # A large weight decay: if FSDP's flat 1-D parameter views lost their decay, the
    # weights would drift apart by more than the tolerance below within 4 steps.
    common = {"optim.weight_decay": 0.5, "train.checkpoint_every_steps": 2}
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2, **common})
    fsdp = run_training(dataset, tmp_path / "fsdp", **{**FSDP_ON_CPU, **common})
    assert "distributed_backend=gloo" in fsdp.stdout + fsdp.stderr
    assert ("FSDP: 3 units (root + one per Block), FULL_SHARD, activation checkpointing on 2 blocks, "
            "parameters in torch.float32") in fsdp.stdout + fsdp.stderr
    # rank 0 gathered the full weights for the export
    assert_same_as_single_process(tmp_path / "single", tmp_path / "fsdp")
    sharded = read_losses(tmp_path / "fsdp")
    # checkpoints are sharded folders, swapped into place whole (no temp folder left)
    checkpoints = tmp_path / "fsdp" / "checkpoints"
    assert detect_format(checkpoints / "last.ckpt") == "lightning-sharded"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step000002.ckpt", "step000004.ckpt"]
    # load_model reads a sharded folder in one process: the last one is the exported model
    model = load_model(checkpoints / "last.ckpt")
    assert model.lm_head.weight is model.embed.weight  # the tie survives sharding
    assert_same_weights(model, load_model(tmp_path / "fsdp" / "export"), rtol=0, atol=0)

    # resuming from the sharded step-2 checkpoint replays steps 3 and 4 exactly
    run_training(dataset, tmp_path / "resumed", **{**FSDP_ON_CPU, **common,
                                                   "ckpt_path": str(checkpoints / "step000002.ckpt")})
    resumed = read_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(sharded[step], rel=1e-6), step
    assert_same_weights(load_model(tmp_path / "resumed" / "export"), load_model(tmp_path / "fsdp" / "export"),
                        rtol=1e-6, atol=1e-7)


def test_fsdp_mixed_precision_keeps_float32_parameters_and_buffers():
    """bf16-mixed under FSDP: sharded parameters, buffers (the RoPE tables) and gradient
    reduction stay float32 and autocast runs the matmuls in bf16, as under DDP; Lightning's
    own config would cast them all to bf16. The true-precision modes keep Lightning's."""
    from lightning.pytorch.plugins.precision import FSDPPrecision

    from mypt_lightning.training.distributed import fsdp_strategy

    mixed = fsdp_strategy()
    mixed.precision_plugin = FSDPPrecision("bf16-mixed")
    assert mixed.mixed_precision_config is None
    true_bf16 = fsdp_strategy()
    true_bf16.precision_plugin = FSDPPrecision("bf16-true")
    assert true_bf16.mixed_precision_config.param_dtype == torch.bfloat16


@pytest.mark.slow
def test_fsdp_with_compile_trains_like_eager_fsdp(tmp_path):
    """model.compile=true under FSDP compiles each Block (compiling the wrapped model fails
    in dynamo); the losses are those of the eager FSDP run."""
    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    run_training(dataset, tmp_path / "eager", **FSDP_ON_CPU)
    run_training(dataset, tmp_path / "compiled", **FSDP_ON_CPU, **{"model.compile": "true"})
    eager, compiled = read_losses(tmp_path / "eager"), read_losses(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) == [1, 2, 3, 4]
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-5), step
