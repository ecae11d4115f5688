"""Loggers: a CSV logger that keeps a resumed run's history, and finding the W&B ones.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a new process starts
logging into the same directory, so ``ckpt_path=last`` would lose the curve before the
crash. :class:`ResumableCSVLogger` appends instead when ``resume`` is true (``train()``
sets it when resuming). Steps logged by the killed process after its last checkpoint
appear twice; the later rows are the resumed run's.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str):
        super().__init__(log_dir)
        # Start from the existing file's columns: otherwise the first save of the resumed
        # process rewrites the header with only the keys it logged so far, and fails on the
        # old rows' other columns (a resume whose first steps run no validation).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))

    def _check_log_dir_exists(self) -> None:  # keep metrics.csv: we append to it
        pass


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` when ``resume=True``."""

    def __init__(self, *args, resume: bool | str | None = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume = bool(resume)  # the config passes ckpt_path itself: "last", a path, or null

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            writer_cls = _AppendingExperimentWriter if self.resume else ExperimentWriter
            self._experiment = writer_cls(log_dir=self.log_dir)
        return self._experiment


def wandb_loggers(loggers) -> list[WandbLogger]:
    """The W&B loggers among ``loggers`` (by type: a subclass counts too).

    >>> wandb_loggers([CSVLogger("logs")])
    []
    """
    return [logger for logger in loggers or [] if isinstance(logger, WandbLogger)]
