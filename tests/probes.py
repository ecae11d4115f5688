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


class SaveRankParameters(L.Callback):
    """At the end of training, save this rank's parameters to ``<directory>/params_rank<r>.pt``
    (to compare the replicas of a data-parallel run bit for bit)."""

    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        state = {name: p.detach().cpu().clone() for name, p in pl_module.model.named_parameters()}
        torch.save(state, os.path.join(self.directory, f"params_rank{trainer.global_rank}.pt"))


class RecordBatchWidths(L.Callback):
    """Append ``rank step width`` per training micro-batch to ``<directory>/widths_rank<r>``."""

    def __init__(self, directory: str):
        self.directory = directory

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(os.path.join(self.directory, f"widths_rank{trainer.global_rank}"), "a") as f:
            f.write(f"{trainer.global_step} {batch['input_ids'].shape[1]}\n")
