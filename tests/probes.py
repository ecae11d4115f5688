"""Callbacks that observe a real training process (loaded like fault_injection.py: with
`+callbacks.NAME._target_=probes.X` and PYTHONPATH=tests)."""

from __future__ import annotations

import hashlib
import os

import lightning as L
import torch


class RecordRNGState(L.Callback):
    """Write a digest of the torch RNG state at the first training batch to
    ``<directory>/rng_rank<r>`` (reads the state, draws nothing)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done:
            return
        digest = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
        with open(os.path.join(self.directory, f"rng_rank{trainer.global_rank}"), "w") as f:
            f.write(digest)
        self.done = True
