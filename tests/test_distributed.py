"""Data parallel training on 2 CPU processes (gloo) through Lightning's own DDP strategy."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_e2e import ROOT, tiny_overrides, write_packed_dataset


def read_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def run_training(dataset: Path, out: Path, **extra) -> subprocess.CompletedProcess:
    overrides = tiny_overrides(
        dataset, out, logger="csv",
        **{"model.dropout": 0.0, "model.neftune_alpha": 0, "train.max_steps": 4, "data.num_workers": 0,
           "train.eval_every_steps": 2, "hydra.run.dir": str(out), **extra},
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "run.py", *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_ddp_two_processes_match_one_process_with_doubled_batch(tmp_path):
    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2})
    ddp = run_training(dataset, tmp_path / "ddp", **{
        "data.batch_size": 1, "trainer.devices": 2, "trainer.strategy": "ddp",
    })
    assert "distributed_backend=gloo" in ddp.stdout + ddp.stderr
    single, double = read_losses(tmp_path / "single"), read_losses(tmp_path / "ddp")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step] == pytest.approx(single[step], rel=1e-5), step
    # rank 0 exported the trained weights, identical to what the single process learned
    from mypt_lightning import load_model
    import torch
    a, b = load_model(tmp_path / "single" / "export"), load_model(tmp_path / "ddp" / "export")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
