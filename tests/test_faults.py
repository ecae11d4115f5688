"""Faults survived: NaN steps, SIGTERM, SIGKILL during a save, unusable output dirs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from mypt_lightning.errors import UserError
from mypt_lightning.training.fault_tolerance import PREEMPTED_EXIT_CODE, check_output_dir
from mypt_lightning.training.lit_module import NonFiniteLossError
from mypt_lightning.training.train import train
from helpers import write_packed_dataset
from helpers import ROOT, StepLosses, compose_cfg, tiny_overrides


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_packed_dataset(tmp_path_factory.mktemp("data") / "sft", {"train": 40, "val": 4}, seed=7)


class NaNEmbeddings(L.Callback):
    """Makes the embedding output NaN for the optimizer steps in ``bad_steps`` (1-based)."""

    def __init__(self, bad_steps: set[int]):
        self.bad_steps = bad_steps
        self.handle = None
        self.params_before_bad_step: dict[int, torch.Tensor] = {}
        self.params_after: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step + 1  # the step this micro-batch belongs to
        if pl_module.at_step_boundary:
            self.params_before_bad_step[step] = pl_module.model.norm_f.weight.detach().clone()
        if step in self.bad_steps and self.handle is None:
            self.handle = pl_module.model.embed.register_forward_hook(lambda m, i, out: out * float("nan"))
        elif step not in self.bad_steps and self.handle is not None:
            self.handle.remove()
            self.handle = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.at_step_boundary:
            self.params_after[trainer.global_step] = pl_module.model.norm_f.weight.detach().clone()


def test_nonfinite_step_is_skipped_and_counted(dataset, tmp_path):
    nan = NaNEmbeddings({3})
    losses = StepLosses()
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "run", **{"data.num_workers": 0})),
          extra_callbacks=[nan, losses])
    assert sorted(losses.losses) == [1, 2, 3, 4, 5, 6]
    assert losses.losses[3] != losses.losses[3]  # NaN logged for the skipped step
    torch.testing.assert_close(nan.params_after[3], nan.params_before_bad_step[3])  # weights untouched
    assert not torch.equal(nan.params_after[4], nan.params_after[3])  # training went on
    assert all(v == v for s, v in losses.losses.items() if s != 3)


def test_training_leaves_the_signal_handlers_as_it_found_them(dataset, tmp_path):
    """A stale SIGTERM handler left behind by a finished run (in the same process: a
    notebook, a Hydra multirun, the test suite) ignored SIGTERM, and prepare_sft's worker
    pool, forked later, could not be terminated: the suite hung there."""
    watched = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    before = {s: signal.getsignal(s) for s in watched}
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "run", **{"data.num_workers": 0, "train.max_steps": 2})))
    assert {s: signal.getsignal(s) for s in watched} == before


def test_too_many_nonfinite_steps_stop_with_step_batch_and_samples(dataset, tmp_path):
    cfg = compose_cfg(tiny_overrides(dataset, tmp_path / "run", **{
        "data.num_workers": 0, "train.max_consecutive_nonfinite": 2}))
    with pytest.raises(NonFiniteLossError, match=r"step \d+ \(batch index \d+\).*sample ids.*\[\d+, \d+\].*2 non-finite steps in a row"):
        train(cfg, extra_callbacks=[NaNEmbeddings({2, 3, 4, 5})])


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="not writable"):
        check_output_dir(blocker / "run", 1000)


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(UserError, match="not enough disk space"):
        check_output_dir(tmp_path / "run", 100 * 2**20)


# ----------------------------------------------------------------- real processes

def run_py(overrides: list[str], check=True, timeout=600, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run([sys.executable, "run.py", *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def losses_from_csv(run_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                step = int(row["step"])
                assert out.get(step, float(row["train/loss"])) == pytest.approx(float(row["train/loss"]), rel=1e-6)
                out[step] = float(row["train/loss"])
    return out


def process_overrides(dataset: Path, run_dir: Path, **extra) -> list[str]:
    return tiny_overrides(dataset, run_dir, logger="csv", **{
        "hydra.run.dir": str(run_dir), "train.max_steps": 8, "train.checkpoint_every_steps": 2,
        "train.eval_every_steps": 4, "data.num_workers": 1, **extra})


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[int, float]:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run_py(process_overrides(dataset, run_dir))
    losses = losses_from_csv(run_dir)
    assert sorted(losses) == list(range(1, 9))
    return losses


def test_sigterm_mid_accumulation_saves_at_step_end_and_resumes_exactly(dataset, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    # Batch 6 is the first micro-batch of step 4 (2 micro-batches per step): mid-window.
    stopped = run_py(process_overrides(dataset, run_dir, **{
        "+callbacks.sigterm._target_": "fault_injection.SignalAtBatch", "+callbacks.sigterm.batch": 6}), check=False)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert "SIGTERM: stopped at step 4 " in stopped.stderr, stopped.stderr[-600:]
    assert "Traceback" not in stopped.stderr
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["mypt_train_state"]["micro_step"] == 0

    run_py(process_overrides(dataset, run_dir, ckpt_path="last"))
    resumed = losses_from_csv(run_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6), step


def test_scheduler_signal_saves_first_then_hands_over_to_the_scheduler(dataset, tmp_path, uninterrupted):
    """Under submitit, SIGUSR2 announces the time limit and submitit's handler requeues the
    job and exits on the spot. The run must save last.ckpt at the step end first and only
    then call that handler; the requeued job resumes with ckpt_path=auto."""
    run_dir, marker = tmp_path / "run", tmp_path / "requeued"
    stopped = run_py(process_overrides(dataset, run_dir, **{
        "+callbacks.scheduler._target_": "fault_injection.FakeSchedulerHandler",
        "+callbacks.scheduler.marker": str(marker),
        "+callbacks.usr2._target_": "fault_injection.SignalAtBatch", "+callbacks.usr2.batch": 6,
        "+callbacks.usr2.signum": "SIGUSR2"}), check=False)
    assert stopped.returncode == 3, stopped.stderr[-3000:]  # the scheduler's handler ended it
    assert "stopped at step 4 " in stopped.stderr
    assert marker.read_text() == f"signal {int(signal.SIGUSR2)} last.ckpt step 4\n"

    run_py(process_overrides(dataset, run_dir, ckpt_path="auto"))
    resumed = losses_from_csv(run_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6), step


def test_slurm_requeue_signal_saves_at_step_end_then_requeues(dataset, tmp_path, uninterrupted):
    """A SLURM job (Lightning's SLURMEnvironment, auto-requeue on) gets the time-limit signal
    SIGUSR1 mid-step: it saves last.ckpt at the step end, then runs `scontrol requeue <job>`
    (a stand-in on PATH records the call and the checkpoint on disk at that moment)."""
    run_dir, bin_dir, record = tmp_path / "run", tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(
        f"#!{sys.executable}\n"
        "import sys, torch\n"
        f"step = torch.load({str(run_dir / 'checkpoints' / 'last.ckpt')!r}, weights_only=True)['global_step']\n"
        f"open({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + f' (last.ckpt step {{step}})\\n')\n")
    scontrol.chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "mypt", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    stopped = run_py(process_overrides(dataset, run_dir, **{
        "+callbacks.usr1._target_": "fault_injection.SignalAtBatch", "+callbacks.usr1.batch": 6,
        "+callbacks.usr1.signum": "SIGUSR1"}), check=False, env=slurm)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert "SLURM job 4242: requeued" in stopped.stderr
    assert record.read_text() == "requeue 4242 (last.ckpt step 4)\n"

    run_py(process_overrides(dataset, run_dir, ckpt_path="auto"), env=slurm)  # the requeued job
    resumed = losses_from_csv(run_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6), step


TWO_RANKS = {
    "ddp": {"trainer.strategy": "ddp", "trainer.devices": 2, "data.batch_size": 1},
    "fsdp": {"trainer": "fsdp", "trainer.accelerator": "cpu", "trainer.devices": 2,
             "trainer.precision": "32-true", "data.batch_size": 1},
}


@pytest.mark.parametrize("strategy,signalled_rank", [("ddp", 1), ("fsdp", 0)])
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(dataset, tmp_path, strategy, signalled_rank):
    """Only one rank gets the signal (mid accumulation window); all ranks save step 4 together
    and exit 143 (with Lightning's own handler, the job deadlocked). The resumed run then
    matches an uninterrupted one step by step (dropout and NEFTune noise included)."""
    run_py(process_overrides(dataset, tmp_path / "straight", **TWO_RANKS[strategy]), timeout=300)
    uninterrupted = losses_from_csv(tmp_path / "straight")
    run_dir = tmp_path / "run"
    stopped = run_py(process_overrides(dataset, run_dir, **TWO_RANKS[strategy], **{
        "+callbacks.sigterm._target_": "fault_injection.SignalAtBatch", "+callbacks.sigterm.batch": 6,
        "+callbacks.sigterm.rank": signalled_rank}), check=False, timeout=300)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert stopped.stderr.count("SIGTERM: stopped at step 4 ") == 2, stopped.stderr[-1500:]  # both ranks
    assert "Traceback" not in stopped.stderr

    run_py(process_overrides(dataset, run_dir, ckpt_path="last", **TWO_RANKS[strategy]), timeout=300)
    resumed = losses_from_csv(run_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6), step


def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(dataset, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    killed = run_py(process_overrides(dataset, run_dir, **{
        "+callbacks.kill._target_": "fault_injection.KillDuringSave", "+callbacks.kill.step": 6}), check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # the save of step 6 died half-written; step 4's is intact

    run_py(process_overrides(dataset, run_dir, ckpt_path="last"))
    resumed = losses_from_csv(run_dir)  # the SIGKILLed process never flushed its CSV rows
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-6), step


def test_sigkill_mid_run_resumes_from_last_checkpoint(dataset, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    # Batch 10 = step 6's first micro-batch: the step-4 checkpoint is the newest one on disk.
    killed = run_py(process_overrides(dataset, run_dir, **{
        "+callbacks.kill._target_": "fault_injection.SignalAtBatch", "+callbacks.kill.batch": 10,
        "+callbacks.kill.signum": "SIGKILL", "train.checkpoint_every_steps": 4}), check=False)
    assert killed.returncode == -signal.SIGKILL
    run_py(process_overrides(dataset, run_dir, ckpt_path="last", **{"train.checkpoint_every_steps": 4}))
    resumed = losses_from_csv(run_dir)
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-6), step


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(dataset, tmp_path):
    eager, compiled = StepLosses(), StepLosses()
    base = {"data.num_workers": 0, "model.dropout": 0.0, "model.neftune_alpha": 0, "train.max_steps": 3}
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "eager", **base)), extra_callbacks=[eager])
    train(compose_cfg(tiny_overrides(dataset, tmp_path / "compiled", **base, **{"model.compile": "true"})),
          extra_callbacks=[compiled])
    for step, loss in eager.losses.items():
        assert compiled.losses[step] == pytest.approx(loss, rel=1e-4), step
