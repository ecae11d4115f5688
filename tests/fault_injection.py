"""Callbacks that hurt a real training process on purpose (used by tests/test_faults.py).

Loaded into `python run.py` subprocesses with `+callbacks.NAME._target_=fault_injection.X`
and PYTHONPATH=tests, so the signal or kill hits the real training process.
"""

from __future__ import annotations

import os
import signal

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
