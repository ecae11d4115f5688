"""Surviving preemption and bad disks.

* SIGTERM (SLURM preemption, ``kill``): Lightning notices it and stops after the current
  batch. Stopping in the middle of a gradient-accumulation window would throw away the
  partial gradients, and a checkpoint taken there could not be resumed exactly. So
  :func:`defer_sigterm_to_step_end` defers the stop to the end of the optimizer step, writes
  ``last.ckpt`` there, and then lets Lightning stop. ``ckpt_path=last`` resumes exactly.
* Checkpoint files are written atomically by Lightning (a temp file moved into place), so
  a process killed mid-save leaves the previous ``last.ckpt`` intact; tests kill a real
  training process during a save to prove it.
* :func:`check_output_dir` fails before training when the run directory is not writable
  or the disk cannot hold a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from mypt_lightning.errors import UserError

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what schedulers expect of a terminated job


def defer_sigterm_to_step_end(trainer, module) -> str | None:
    """Called at the end of every training batch (the LightningModule's ``on_train_batch_end``,
    which Lightning runs after all callbacks, right before it checks for SIGTERM).

    Mid accumulation window: hide the signal from Lightning until the optimizer step ends.
    At a step boundary: save ``last.ckpt`` and let Lightning stop. Returns the saved path.
    """
    connector = trainer._signal_connector
    if not (connector.received_sigterm or getattr(module, "_sigterm_pending", False)):
        return None
    if module._micro_step != 0:
        module._sigterm_pending = True
        connector.received_sigterm = False
        return None
    module._sigterm_pending = False
    path = last_checkpoint_path(trainer)
    trainer.save_checkpoint(path)
    rank_zero_info(f"[mypt] SIGTERM: saved {path} at step {trainer.global_step}; stopping")
    connector.received_sigterm = True  # Lightning raises SIGTERMException after this batch
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
