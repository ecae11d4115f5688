"""End to end through the real config tree: train, export, load, resume exactly, sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mypt_lightning.config  # noqa: F401
from helpers import BLOCK, ROOT, SimulatedCrash, StepLosses, compose_cfg, tiny_overrides, write_packed_dataset
from mypt_lightning import load_model
from mypt_lightning.errors import UserError
from mypt_lightning.training.train import train

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_packed_dataset(tmp_path_factory.mktemp("data") / "sft_tiny", {"train": 40, "val": 4})


def test_train_checkpoint_export_and_load(dataset, tmp_path):
    out = tmp_path / "run"
    cfg = compose_cfg(tiny_overrides(dataset, out, logger="csv"))
    record = StepLosses()
    train(cfg, extra_callbacks=[record])
    assert sorted(record.losses) == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(v) for v in record.losses.values())
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "checkpoints" / "step000003.ckpt").exists()
    metrics_csv = (out / "csv" / "metrics.csv").read_text()
    for name in ["train/loss", "train/grad_norm", "train/supervised_fraction", "train/masked_token_acc",
                 "train/tokens_per_sec", "val/val/loss"]:
        assert name in metrics_csv, name

    exported = load_model(out / "export")
    from_ckpt = load_model(out / "checkpoints" / "last.ckpt")
    ids = torch.randint(0, 50000, (1, 20))
    segments = torch.tensor([[1] * 8 + [2] * 12])
    torch.testing.assert_close(exported(ids), from_ckpt(ids))
    torch.testing.assert_close(exported(ids, segment_ids=segments)[0, 8:], exported(ids[:, 8:])[0])
    assert not exported.training


def test_resume_continues_the_same_loss_curve(dataset, tmp_path):
    straight = StepLosses()
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "a")), extra_callbacks=[straight])

    killed = StepLosses(crash_after_step=4)  # checkpoint at step 3, crash after step 4 (its work lost)
    with pytest.raises(SimulatedCrash):
        train(compose_cfg(tiny_overrides(dataset, tmp_path / "b")), extra_callbacks=[killed])
    resumed = StepLosses()
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "b", ckpt_path="last")), extra_callbacks=[resumed])

    assert sorted(resumed.losses) == [4, 5, 6]
    for step in range(1, 5):
        assert killed.losses[step] == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7)
    for step in range(4, 7):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7)


def test_missing_previous_phase_export_names_the_command(dataset, tmp_path):
    cfg = compose_cfg(tiny_overrides(dataset, tmp_path / "runs" / "phase4_multiturn",
                                     phase="phase4_multiturn", init_from="auto"))
    with pytest.raises(UserError, match="python run.py phase=phase3_chat_sft"):
        train(cfg)


def test_ckpt_path_resolution(tmp_path):
    from mypt_lightning.training.train import resolve_ckpt_path

    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("auto", tmp_path) is None  # nothing to resume yet: start fresh
    with pytest.raises(UserError, match="no checkpoint at"):
        resolve_ckpt_path("last", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_missing_dataset_is_a_clear_error(tmp_path):
    cfg = compose_cfg(tiny_overrides(tmp_path / "nope", tmp_path / "run"))
    with pytest.raises(UserError, match="dataset not found"):
        train(cfg)


def test_multirun_sweep_runs_four_jobs_with_their_own_wandb_runs(dataset, tmp_path):
    overrides = tiny_overrides(dataset, tmp_path, logger="wandb", **{"train.max_steps": 2, "train.eval_every_steps": 2})
    swept_or_replaced = ("paths.output_dir=", "paths.output_root=", "optim.lr=", "model.neftune_alpha=", "data.num_workers=")
    overrides = [o for o in overrides if not o.startswith(swept_or_replaced)]
    overrides += [f"paths.output_root={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", "data.num_workers=0"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "run.py", "-m", "optim.lr=1e-3,3e-3", "model.neftune_alpha=0,5", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name[0].isdigit())
    # every job named after its swept values: directory, run name, W&B run name
    names = ["phase1_format_lock-lr1e-3-neft0", "phase1_format_lock-lr1e-3-neft5",
             "phase1_format_lock-lr3e-3-neft0", "phase1_format_lock-lr3e-3-neft5"]
    assert [p.name for p in jobs] == [f"{i}_{name}" for i, name in enumerate(names)]
    run_ids = set()
    for job, name in zip(jobs, names):
        assert (job / "export" / "model.safetensors").exists()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        run_ids.add(runs[0].name.rsplit("-", 1)[-1])
        assert json.loads((job / "run_info.json").read_text())["run_name"] == name
        assert wandb_display_name(next(runs[0].glob("run-*.wandb"))) == name
    assert len(run_ids) == 4
    assert (tmp_path / "sweep" / "plots" / "overview.png").exists()  # all jobs overlaid


def wandb_display_name(path: Path) -> str:
    """The run name recorded in a W&B offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    from mypt_lightning.training.plots import _wandb_records

    for raw in _wandb_records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            return record.run.display_name
    raise AssertionError(f"no run record in {path}")


def test_gate_failure_stops_the_next_phase(dataset, tmp_path):
    runs = tmp_path / "runs"
    phase1 = compose_cfg(tiny_overrides(dataset, runs / "phase1_format_lock", **{
        "curriculum.run_gate": "true", "curriculum.gate_max_cases": 3, "train.max_steps": 2}))
    metrics = train(phase1)
    report = json.loads((runs / "phase1_format_lock" / "gate_report.json").read_text())
    assert metrics["gate_passed"] == 0.0 and report["passed"] is False  # 2 steps of a random tiny model

    overrides = dict(phase="phase2_operators", init_from="auto", **{"train.max_steps": 2})
    with pytest.raises(UserError, match="phase1_format_lock did not pass its success gate"):
        train(compose_cfg(tiny_overrides(dataset, runs / "phase2_operators", **overrides)))
    overrides["curriculum.stop_on_gate_failure"] = "false"
    train(compose_cfg(tiny_overrides(dataset, runs / "phase2_operators", **overrides)))
    info = json.loads((runs / "phase2_operators" / "run_info.json").read_text())
    assert info["init_from"] == str(runs / "phase1_format_lock" / "export")


def test_curriculum_multirun_chains_phases_in_one_sweep(dataset, tmp_path):
    from mypt_lightning.weights.checkpoint import save_exported
    from mypt_lightning.model import MyPT, MyPTConfig

    base = tmp_path / "base"
    save_exported(MyPT(MyPTConfig.tiny(n_embd=32, n_head=2, n_layer=2, block_size=BLOCK)), base)
    overrides = tiny_overrides(dataset, tmp_path, **{"train.max_steps": 2, "train.eval_every_steps": 2,
                                                      "data.num_workers": 0})
    overrides = [o for o in overrides if not o.startswith(("paths.output_dir=", "phase=", "init_from="))]
    phases = ["phase1b_context_ext", "phase1_format_lock", "phase2_operators"]

    def sweep(name: str, base_model: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "run.py", "-m", f"phase={','.join(phases)}", *overrides, "init_from=auto",
             f"hydra.sweep.dir={tmp_path / name}", f"paths.base_model={base_model}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)

    result = sweep("chain", base)
    assert result.returncode == 0, result.stderr[-3000:]
    inits = [json.loads((tmp_path / "chain" / f"{i}_{p}" / "run_info.json").read_text())["init_from"]
             for i, p in enumerate(phases)]
    assert inits == [str(base), str(tmp_path / "chain" / "0_phase1b_context_ext" / "export"),
                     str(tmp_path / "chain" / "1_phase1_format_lock" / "export")]

    missing = sweep("broken", tmp_path / "no_base_model")  # the first phase cannot start
    assert missing.returncode != 0
    assert "starts from the MyPT base model" in missing.stderr
    assert not list((tmp_path / "broken").glob("*/checkpoints"))  # nothing was trained
