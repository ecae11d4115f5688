"""Surviving preemption and bad disks.

* SIGTERM (SLURM preemption, ``kill``): the run finishes the optimizer step it is in,
  writes ``last.ckpt`` and exits with 143; ``ckpt_path=last`` resumes exactly. Stopping in
  the middle of a gradient-accumulation window would throw away the partial gradients,
  and a checkpoint taken there could not be resumed exactly.

  With several processes the signal reaches the ranks at different moments, or only one
  of them (``kill`` of one PID). Saving is a collective (a barrier under DDP; every rank
  writes its shard under FSDP), so the ranks must agree on the step at which they stop.
  Lightning's own SIGTERM handler broadcasts from inside the signal handler, which pairs
  with whatever collective the other ranks happen to run next and deadlocks (seen here:
  2 DDP ranks, SIGTERM to rank 1, the job hung). :meth:`Preemption.install` replaces
  it with one that only sets a flag, and :func:`stop_at_step_end_on_sigterm` sums the flag
  over the ranks at every optimizer-step boundary: if any rank was signalled, all of them
  save the same step and stop.
* Requeue signals: SLURM's time-limit warning as Lightning's auto-requeue expects it
  (``sbatch --signal=USR1@120``) and submitit's SIGUSR2 are taken over the same way; once
  ``last.ckpt`` is saved the job is requeued (``scontrol requeue``, or submitit's own
  handler) and the requeued job resumes with ``ckpt_path=auto``.
* Checkpoint files are written atomically by Lightning (a temp file moved into place), and
  FSDP's sharded checkpoint folders by :class:`~mypt_lightning.distributed.MyPTFSDPStrategy`,
  so a process killed mid-save leaves the previous ``last.ckpt`` intact; tests kill a real
  training process during a save to prove it.
* :func:`check_output_dir` fails before training when the run directory is not writable
  or the disk cannot hold a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from mypt_lightning.errors import UserError

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what schedulers expect of a terminated job


def scheduler_preempt_signal() -> signal.Signals:
    """The signal submitit (Hydra's submitit launcher) sends before a time limit or a
    preemption: SIGUSR2 unless its SUBMITIT_PREEMPT_SIGNAL variable names another."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


class Preemption:
    """What a run knows about a stop request; lives on the LightningModule as ``preemption``.

    ``received``: this process got SIGTERM (or the scheduler's signal).
    ``handoff``: what to call, with the signal, once ``last.ckpt`` is saved: submitit's
    handler, or :func:`requeue_slurm_job` for Lightning's SLURM requeue signal (SIGUSR1).
    Either requeues the job, which then resumes with ``ckpt_path=auto``.
    """

    def __init__(self) -> None:
        self.received = False
        self.handoff: tuple | None = None
        self._replaced: list[tuple] = []

    def install(self, trainer) -> None:
        """Call from ``on_train_start``, after Lightning registered its handlers.

        SIGTERM: replaces Lightning's handler (which broadcasts from inside the handler; see
        the module docstring). Like Lightning's, the new one forwards the signal to the rank
        processes this one launched, so a ``kill`` of the launching process stops all of them.
        The scheduler's signal: handled the same way only where a handler for it is already
        installed (submitit's); that handler runs later, through :meth:`hand_over`.
        """

        def on_signal(signum, frame) -> None:
            if not self.received:
                launcher = trainer.strategy.launcher
                if launcher is not None:
                    launcher.kill(signum)
            self.received = True

        self._replace(signal.SIGTERM, on_signal)
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue and environment.requeue_signal:
            # Lightning's SLURM auto-requeue saves a checkpoint on the spot (mid-step) and
            # requeues; we save at the step end and requeue after (sbatch --signal=USR1@120).

            def on_requeue_signal(signum, frame) -> None:
                self.handoff = (requeue_slurm_job, signum)
                on_signal(signum, frame)

            self._replace(environment.requeue_signal, on_requeue_signal)
        scheduler_signal = scheduler_preempt_signal()
        scheduler_handler = signal.getsignal(scheduler_signal)
        if callable(scheduler_handler):

            def on_scheduler_signal(signum, frame) -> None:
                self.handoff = (scheduler_handler, signum)
                on_signal(signum, frame)

            self._replace(scheduler_signal, on_scheduler_signal)

    def _replace(self, signum, handler) -> None:
        self._replaced.append((signum, signal.getsignal(signum), handler))
        signal.signal(signum, handler)

    def uninstall(self) -> None:
        """Put back the handlers :meth:`install` replaced, where ours is still in place.

        Lightning's teardown at the end of ``fit`` already restores every signal to what it
        was before ``fit``; putting back the handler we replaced (Lightning's) after that
        would leave a stale handler behind, one that ignores SIGTERM: forked workers
        started later (prepare_sft's pool) could then not be terminated.
        """
        for signum, previous, ours in reversed(self._replaced):
            if signal.getsignal(signum) is ours:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._replaced = []

    def hand_over(self) -> None:
        """After the checkpoint is saved and the run wound down: let the scheduler's handler
        do its part (submitit checkpoints its job description, requeues the job and exits)."""
        if self.handoff is not None:
            handler, signum = self.handoff
            self.handoff = None
            handler(signum, None)


def requeue_slurm_job(signum=None, frame=None) -> None:
    """``scontrol requeue`` this SLURM job, from the task of rank 0 only (as Lightning does)."""
    if os.environ.get("SLURM_PROCID", "0") != "0":
        return
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    except FileNotFoundError:
        print(f"[mypt] could not requeue SLURM job {job_id}: no scontrol on PATH", file=sys.stderr)
        return
    outcome = "requeued" if result.returncode == 0 else f"requeue failed ({result.stderr.strip()})"
    print(f"[mypt] SLURM job {job_id}: {outcome}", file=sys.stderr)


def stop_at_step_end_on_sigterm(trainer, module) -> str | None:
    """Called at the end of every training batch on every rank (the LightningModule's
    ``on_train_batch_end``, which Lightning runs right before it checks for SIGTERM).

    Mid accumulation window: nothing (the flag waits for the step's end). At a step
    boundary: if any rank received SIGTERM, every rank saves ``last.ckpt`` and tells
    Lightning to stop after this batch. Returns the saved path, or None.
    """
    if module._micro_step != 0:
        return None
    received = module.preemption.received
    if trainer.world_size > 1:  # one scalar all-reduce per optimizer step
        flag = torch.tensor(float(received), device=module.device)
        received = float(trainer.strategy.reduce(flag, reduce_op="sum")) > 0
    if not received:
        return None
    path = last_checkpoint_path(trainer)
    trainer.save_checkpoint(path)
    rank_zero_info(f"[mypt] SIGTERM: saved {path} at step {trainer.global_step}; stopping")
    trainer._signal_connector.received_sigterm = True  # Lightning raises SIGTERMException after this batch
    return path


def last_checkpoint_path(trainer) -> str:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
    return os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")


def estimate_checkpoint_bytes(num_parameters: int) -> int:
    """fp32 weights + AdamW's two moments, the bulk of a full Lightning checkpoint."""
    return num_parameters * 4 * 3


def check_output_dir(output_dir: Path, checkpoint_bytes: int) -> None:
    """Raise :class:`UserError` if ``output_dir`` cannot take this run's checkpoints."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_test_"):
            pass
    except OSError as err:
        raise UserError(f"output directory {output_dir} is not writable: {err.strerror or err}") from None
    free = shutil.disk_usage(output_dir).free
    # Two checkpoints must fit: the new one is written beside last.ckpt before replacing it.
    needed = 2 * checkpoint_bytes
    if free < needed:
        raise UserError(
            f"not enough disk space in {output_dir}: {free / 2**30:.2f} GiB free, a checkpoint of this "
            f"model takes ~{checkpoint_bytes / 2**30:.2f} GiB and two must fit during a save. Free some "
            f"space or point paths.output_root elsewhere."
        )
