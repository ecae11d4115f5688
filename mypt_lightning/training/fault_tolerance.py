"""Surviving preemption, Ctrl-C and bad disks.

* SIGTERM (SLURM preemption, ``kill``, ``timeout``): the run finishes the optimizer step it
  is in, writes ``last.ckpt`` and exits with 143; ``ckpt_path=last`` resumes exactly.
  Stopping in the middle of a gradient-accumulation window would throw away the partial
  gradients, and a checkpoint taken there could not be resumed exactly.
* Ctrl-C (SIGINT) does the same and exits with 130; a second Ctrl-C stops at once, without
  saving (Lightning's KeyboardInterrupt shutdown; ``train()`` keeps the exit code 130).
* Signals to the whole process group (schedulers, a terminal) also reach the DataLoader
  workers, which ignore them (:mod:`data_modules.process_lifetime`): the main process
  owns them and ends them after saving.

  With several processes the signal reaches the ranks at different moments, or only one
  of them (``kill`` of one PID). Saving is a collective (a barrier under DDP; every rank
  writes its shard under FSDP), so the ranks must agree on the step at which they stop.
  Lightning's own SIGTERM handler broadcasts from inside the signal handler, which pairs
  with whatever collective the other ranks happen to run next and deadlocks (seen here:
  2 DDP ranks, SIGTERM to rank 1, the job hung). :meth:`Preemption.install` replaces
  it with one that only sets a flag; the flag travels in the one all-reduce the
  LightningModule makes at every optimizer step's end (with the loss sums), and if any rank
  was signalled, all of them save the same step and stop.
* All of it lives in one Lightning callback, :class:`Preemption` (``train()`` adds it to
  every run): it installs the handlers, saves at the step end, and turns the way the run
  stopped into a :class:`Preempted` error that ``run.py`` ends with the exit code.
* Requeue signals: SLURM's time-limit warning as Lightning's auto-requeue expects it
  (``sbatch --signal=USR1@120``) and submitit's SIGUSR2 are taken over the same way; once
  ``last.ckpt`` is saved the job is requeued (``scontrol requeue``, or submitit's own
  handler) and the requeued job resumes with ``ckpt_path=auto``.
* Checkpoint files are written atomically by Lightning (a temp file moved into place), and
  FSDP's sharded checkpoint folders by :class:`~mypt_lightning.training.distributed.MyPTFSDPStrategy`,
  so a process killed mid-save leaves the previous ``last.ckpt`` intact; tests kill a real
  training process during a save to prove it.
* :func:`check_output_dir` fails before training when the run directory is not writable
  or the disk cannot hold a checkpoint; :func:`claim_run_dir` refuses to start a new run
  in a directory that holds a previous one (or moves it aside with ``overwrite=true``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from mypt_lightning.errors import UserError
from data_modules.process_lifetime import SIGINT_EXIT_CODE, SIGTERM_EXIT_CODE

PREEMPTED_EXIT_CODE = SIGTERM_EXIT_CODE  # 143 = 128 + SIGTERM: what schedulers expect of a terminated job
INTERRUPTED_EXIT_CODE = SIGINT_EXIT_CODE  # 130 = 128 + SIGINT: Ctrl-C


def scheduler_preempt_signal() -> signal.Signals:
    """The signal submitit (Hydra's submitit launcher) sends before a time limit or a
    preemption: SIGUSR2 unless its SUBMITIT_PREEMPT_SIGNAL variable names another."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


class Preempted(Exception):
    """Training stopped on a stop signal (after saving ``last.ckpt`` at a step end, or at once
    on a second Ctrl-C); resume with ``ckpt_path=last``.

    ``handoff``: the run's :class:`Preemption`; the entry point calls its ``hand_over()``
    last, so a job scheduler's own handler (submitit's requeue) runs after the checkpoint
    is safe, and exits with its ``exit_code``.
    """

    def __init__(self, message: str, handoff: "Preemption | None" = None):
        super().__init__(message)
        self.handoff = handoff

    @property
    def exit_code(self) -> int:
        return self.handoff.exit_code if self.handoff is not None else PREEMPTED_EXIT_CODE


def stop_requested_here(trainer) -> bool:
    """This process was asked to stop (its :class:`Preemption` callback got a signal)."""
    return any(cb.received for cb in getattr(trainer, "callbacks", []) if isinstance(cb, Preemption))


class Preemption(Callback):
    """The run's stop-signal handling, as a Lightning callback (see the module docstring).

    ``received``: this process got SIGTERM, SIGINT (or the scheduler's signal).
    ``signum``: the first of them; it decides the exit code (:attr:`exit_code`).
    ``interrupts``: Ctrl-Cs so far; the second one stops at once (KeyboardInterrupt, or
    an immediate exit once ``saved``, the checkpoint written for the stop, is on disk).
    ``handoff``: what to call, with the signal, once ``last.ckpt`` is saved: submitit's
    handler, or :func:`requeue_slurm_job` for Lightning's SLURM requeue signal (SIGUSR1).
    Either requeues the job, which then resumes with ``ckpt_path=auto``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received = False
        self.signum: int | None = None
        self.interrupts = 0
        self.saved: str | None = None  # last.ckpt written for the stop; the run is winding down
        self.handoff: tuple | None = None
        self._replaced: list[tuple] = []

    @property
    def signal_name(self) -> str:
        """The stop signal's name for messages (SIGTERM where a rank was stopped by another)."""
        return signal.Signals(self.signum).name if self.signum is not None else "SIGTERM"

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, else 143 (SIGTERM and the requeue signals alike)."""
        return INTERRUPTED_EXIT_CODE if self.signum == signal.SIGINT else PREEMPTED_EXIT_CODE

    def install(self, trainer) -> None:
        """Call from ``on_train_start``, after Lightning registered its handlers.

        SIGTERM: replaces Lightning's handler (which broadcasts from inside the handler; see
        the module docstring). Like Lightning's, the new one forwards the signal to the rank
        processes this one launched, so a ``kill`` of the launching process stops all of them.
        The scheduler's signal: handled the same way only where a handler for it is already
        installed (submitit's); that handler runs later, through :meth:`hand_over`.
        SIGINT (Ctrl-C): the first one stops at the step end like SIGTERM, the second raises
        KeyboardInterrupt at once. It is not forwarded: a terminal signals every rank itself,
        and a rank that was not signalled learns of it at the step boundary anyway.
        """

        def on_signal(signum, frame) -> None:
            if not self.received:
                launcher = trainer.strategy.launcher
                if launcher is not None:
                    launcher.kill(signum)
            self.received = True
            if self.signum is None:
                self.signum = signum

        def on_interrupt(signum, frame) -> None:
            self.interrupts += 1
            if self.interrupts > 1 and self.saved is not None:
                # Already saved and winding down: what is left is not worth waiting for,
                # and a KeyboardInterrupt there lands in DataLoader teardown (__del__) and is lost.
                os.write(2, f"[mypt] Ctrl-C again: exiting now; {self.saved} is saved, resume with "
                            f"ckpt_path=last\n".encode())
                launcher = trainer.strategy.launcher
                if launcher is not None:
                    launcher.kill(signal.SIGKILL)
                os._exit(INTERRUPTED_EXIT_CODE)
            if self.interrupts > 1:
                raise KeyboardInterrupt  # second Ctrl-C mid-step: stop now, without saving
            self.received = True
            if self.signum is None:
                self.signum = signum
            if trainer.is_global_zero:  # os.write: print() is not safe inside a signal handler
                os.write(2, b"[mypt] Ctrl-C: saving last.ckpt at the end of this step, then stopping "
                            b"(Ctrl-C again stops at once without saving)\n")

        self._replace(signal.SIGTERM, on_signal)
        self._replace(signal.SIGINT, on_interrupt)
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

    # ------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self.install(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Right before Lightning checks for SIGTERM. Mid accumulation window: nothing (the
        flag waits for the step's end). At a step boundary: if any rank was asked to stop
        (SIGTERM, SIGINT, a requeue signal), every rank saves ``last.ckpt`` and Lightning
        stops after this batch."""
        if not pl_module.at_step_boundary:
            return
        # Several ranks: what the step's all-reduce agreed on, so all stop at the same step.
        # One process: also a signal that came in after that reduce.
        stop = pl_module.stop_requested_anywhere or (trainer.world_size == 1 and self.received)
        if not stop:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the full state: a resume continues exactly
        self.saved = path
        rank_zero_info(f"[mypt] {self.signal_name}: saved {path} at step {trainer.global_step}; stopping")
        trainer._signal_connector.received_sigterm = True  # Lightning raises SIGTERMException after this batch

    # ------------------------------------------------------------- how it ended
    def stopped_at_step_end(self, step: int, resume_hint: str) -> Preempted:
        """The error for a run Lightning stopped with SIGTERMException (a stop signal)."""
        where = (f"after saving {self.saved}" if self.saved
                 else f"without a new checkpoint ({self.signal_name} outside training steps)")
        return Preempted(f"{self.signal_name}: stopped at step {step} {where}; {resume_hint}", handoff=self)

    def stopped_at_once(self, step: int, resume_hint: str) -> Preempted:
        """The error for a second Ctrl-C (Lightning's KeyboardInterrupt shutdown)."""
        self.signum, self.handoff = signal.SIGINT, None
        return Preempted(f"SIGINT: stopped at once at step {step}, without saving; {resume_hint}", handoff=self)

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


# Launchers that start every rank themselves (torchrun, srun, Lightning's own for ranks > 0)
# say which rank a process is in these variables; the first process has none or all 0.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_first_process() -> bool:
    """True in the process that owns the run directory: global rank 0, or the process that
    launches the other ranks. Known before any process group exists."""
    return all(os.environ.get(name, "0").strip() in ("", "0") for name in _RANK_VARIABLES)


def previous_run_entries(output_dir: Path) -> list[str]:
    """What ``output_dir`` holds of an earlier run: every entry except what Hydra writes for
    THIS run before ``train()`` starts (``.hydra/``, the job's ``*.log``) and
    :func:`check_output_dir`'s short-lived write test."""
    if not output_dir.is_dir():
        return []

    def this_runs(p: Path) -> bool:
        return p.name == ".hydra" or p.name.startswith(".write_test_") or (p.suffix == ".log" and p.is_file())

    return sorted(p.name + ("/" if p.is_dir() else "") for p in output_dir.iterdir() if not this_runs(p))


def has_trained_state(output_dir: Path) -> bool:
    """A checkpoint or an export is there: starting a new run over it would mix or destroy it."""
    checkpoints = output_dir / "checkpoints"
    return (checkpoints.is_dir() and any(checkpoints.iterdir())) or (output_dir / "export").exists()


def claim_run_dir(output_dir: Path, ckpt_path: str | None, resuming: bool, overwrite: bool, run_name: str) -> None:
    """Make sure a new run does not land on top of a previous one; call before anything is
    written. Resuming (``ckpt_path`` found a checkpoint): nothing to check.

    A previous run in ``output_dir`` (checkpoints/, run_info.json, export/, logs) stops a
    new one with a :class:`UserError` naming the three ways on, unless ``overwrite`` is
    set: then the previous run is moved aside to ``<dir>.old-<timestamp>`` (never deleted).
    ``ckpt_path=auto`` (a requeued job) with no checkpoint to resume: a directory with only
    logs and run_info.json is this job's own first attempt, killed before its first
    checkpoint, and the job starts again in it; one with checkpoints or an export is
    refused like any other.
    """
    if ckpt_path not in (None, "", "auto") and overwrite:
        raise UserError(
            f"overwrite=true starts a new run, ckpt_path={ckpt_path} resumes one; drop one of them"
        )
    if resuming or not is_first_process():
        return  # the other ranks follow the first process: it checked (or moved) the directory
    entries = previous_run_entries(output_dir)
    if not entries or (ckpt_path == "auto" and not has_trained_state(output_dir)):
        return
    if overwrite:
        aside = _move_run_aside(output_dir, entries)
        print(f"[mypt] overwrite=true: moved the previous run in {output_dir} aside to {aside}", flush=True)
        return
    shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
    raise UserError(
        f"run directory {output_dir} already holds a previous run ({shown}); resume it with ckpt_path=last, "
        f"start a new run elsewhere with run_name=<new name> (now run_name={run_name}), or move the old run "
        f"aside and start fresh with overwrite=true"
    )


def _move_run_aside(output_dir: Path, entries: list[str]) -> Path:
    """Move ``entries`` of ``output_dir`` into a new ``<dir>.old-<timestamp>`` beside it.
    Hydra's files of this run stay (its log file is open)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, number = output_dir.with_name(f"{output_dir.name}.old-{stamp}"), 1
    while aside.exists():
        number += 1
        aside = output_dir.with_name(f"{output_dir.name}.old-{stamp}-{number}")
    try:
        aside.mkdir()
        for entry in entries:
            os.rename(output_dir / entry.rstrip("/"), aside / entry.rstrip("/"))
    except OSError as err:
        raise UserError(
            f"overwrite=true: could not move the previous run in {output_dir} aside to {aside}: "
            f"{err.strerror or err}; move or delete it yourself"
        ) from None
    return aside
