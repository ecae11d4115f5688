"""Callbacks that hurt a real training process on purpose (used by tests/test_faults.py).

Loaded into `python run.py` subprocesses with `+callbacks.NAME._target_=fault_injection.X`
and PYTHONPATH=tests, so the signal or kill hits the real training process.
"""

from __future__ import annotations

import os
import signal
import time

import lightning as L


class SignalAtBatch(L.Callback):
    """Send ``signum`` to this process at the end of training batch number ``batch`` (0-based);
    with ``rank`` set, only in the process of that global rank."""

    def __init__(self, batch: int, signum: str = "SIGTERM", rank: int | None = None):
        self.batch = batch
        self.signum = getattr(signal, signum)
        self.rank = rank
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.seen == self.batch and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)
        self.seen += 1


class KillDuringSave(L.Callback):
    """SIGKILL this process in the middle of writing the checkpoint of step ``step``:
    half of the file's bytes are on disk when the process dies."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step != self.step:
            return
        from fsspec.implementations.local import LocalFileOpener

        original = LocalFileOpener.write

        def write_half_then_die(self, data):
            original(self, data[: len(data) // 2])
            self.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        LocalFileOpener.write = write_half_then_die


class FakeSchedulerHandler(L.Callback):
    """Plays submitit: installs a SIGUSR2 handler before training starts. When called it
    records the step of the ``last.ckpt`` on disk at that moment into ``marker`` and
    exits with code 3 (submitit would requeue the job, then ``sys.exit(-1)``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, trainer, pl_module, stage):
        import signal
        import sys

        import torch

        def requeue(signum, frame):
            last = os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
            step = torch.load(last, weights_only=True)["global_step"] if os.path.exists(last) else None
            with open(self.marker, "w") as f:
                f.write(f"signal {signum} last.ckpt step {step}\n")
            sys.exit(3)

        signal.signal(signal.SIGUSR2, requeue)


class MarkSteps(L.Callback):
    """Writes the latest finished optimizer step into ``marker`` (so a test knows the run is
    training), sleeping ``seconds`` after every micro-batch so a signal finds it mid-run.
    With ``stall_at_step``: after that step, the next micro-batch sleeps ``stall_seconds``
    (a step that takes long), and ``marker`` reads ``stalled`` while it does."""

    def __init__(self, marker: str, seconds: float = 0.0, stall_at_step: int | None = None,
                 stall_seconds: float = 0.0):
        self.marker = marker
        self.seconds = seconds
        self.stall_at_step = stall_at_step
        self.stall_seconds = stall_seconds

    def _write(self, text: str) -> None:
        tmp = f"{self.marker}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stall_at_step is not None and trainer.global_step == self.stall_at_step and pl_module.at_step_boundary:
            self._write("stalled")
            time.sleep(self.stall_seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.at_step_boundary and trainer.global_step > 0:
            self._write(str(trainer.global_step))
        time.sleep(self.seconds)
