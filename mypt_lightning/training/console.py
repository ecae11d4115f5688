"""What a run shows while it trains, and ``run.log``.

* :class:`StepProgress` (the ``progress_bar`` callback): counts OPTIMIZER steps against
  ``max_steps`` with an ETA, also after a resume (it starts at the resumed step). On a terminal
  it is one tqdm bar; when stdout is not a terminal (``make demo | tee``, a batch job) it
  prints a plain line every ~5% instead. Validation draws no bar: each validation prints one
  line of its metrics.
* :func:`capture_run_log`: everything the run prints (our lines, Lightning's log lines,
  warnings) also goes to ``<run dir>/run.log``, without the bar's carriage returns or escape
  codes.
* :func:`silence_known_noise`: Lightning's adverts and the warnings we know to be harmless,
  listed in :data:`HARMLESS_WARNINGS` / :data:`HIDDEN_LOG_LINES` with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

# (message regex, why it is safe to hide). The only place warnings are silenced for a run.
HARMLESS_WARNINGS: list[tuple[str, str]] = [
    (r".*manual optimization and every_n_train_steps.*",
     "our checkpoints are taken right after an optimizer step, which is what they should hold"),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
     "Lightning 2.6's pytree helper under torch >= 2.10; not our code, no effect on training"),
    (r".*does not have many workers which may be a bottleneck.*",
     "CPU runs use 0-2 loader workers on purpose: batches are read from memory-mapped files, the cores train"),
    (r".*Checkpoint directory .* exists and is not empty.*",
     "a resumed run (ckpt_path=last) keeps its checkpoints there; a new run never lands on an old one (claim_run_dir)"),
    (r".*Precision .* is not supported by the model summary.*",
     "only the summary's size-in-MB estimate assumes 32 bits under *-mixed precision; training is unaffected"),
    (r".*You called `self.log\(.*` but have no logger configured.*",
     "logger=none runs: the progress bar still shows the value"),
]
# Lightning log lines (prefix) that say nothing about this run.
HIDDEN_LOG_LINES: list[tuple[str, str]] = [
    ("💡 Tip:", "an advert for Lightning's cloud services (litlogger / litmodels)"),
    ("Trainer already configured with model summary callbacks",
     "our callbacks config brings its own ModelSummary on purpose"),
]

_LIGHTNING_LOG_NAMES = ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                        "lightning_utilities.core.rank_zero")


class _HideLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(prefix) for prefix, _ in HIDDEN_LOG_LINES)


_HIDE = _HideLines()


def silence_known_noise() -> None:
    """Hide :data:`HARMLESS_WARNINGS` and :data:`HIDDEN_LOG_LINES` (idempotent)."""
    for pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LIGHTNING_LOG_NAMES:
        logger = logging.getLogger(name)
        if _HIDE not in logger.filters:
            logger.addFilter(_HIDE)


# ----------------------------------------------------------------------------- run.log
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Tee:
    """A text stream that writes to ``stream`` and, cleaned, to ``log``."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if "\r" not in text:  # a progress bar's redraw: the terminal's business, not the log's
            self._log.write(_ANSI.sub("", text))
            if "\n" in text:
                self._log.flush()
        return written

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the real stream
        return getattr(self._stream, name)


_ORIGINAL = {"stdout": None}


def terminal():
    """The real stdout, also while :func:`capture_run_log` tees it (the bar draws there only)."""
    return _ORIGINAL["stdout"] or sys.stdout


@contextlib.contextmanager
def capture_run_log(path: str | Path):
    """Tee stdout, stderr and the logging handlers that write to them into ``path``.

    Appends (a resumed run continues its log; nothing of an earlier run is lost) after a
    ``==== <time> ...`` line. An exception leaving the block is noted in the log as one line
    (the caller still handles it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", errors="replace")
    log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    out, err = sys.stdout, sys.stderr
    tee_out, tee_err = _Tee(out, log), _Tee(err, log)
    swapped = []
    for logger in [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                           if isinstance(lg, logging.Logger)]:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and handler.stream in (out, err):
                swapped.append((handler, handler.stream))
                handler.setStream(tee_out if handler.stream is out else tee_err)
    _ORIGINAL["stdout"] = out
    sys.stdout, sys.stderr = tee_out, tee_err
    try:
        yield path
    except BaseException as exc:
        log.write(f"[mypt] the run stopped: {type(exc).__name__}: {exc}\n")
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        _ORIGINAL["stdout"] = None
        for handler, stream in swapped:
            handler.setStream(stream)
        log.close()


# ----------------------------------------------------------------------------- progress
def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")


_ACTIVE: list["StepProgress"] = []


def emit(line: str) -> None:
    """Print ``line`` above the progress bar (or as a plain line when there is none)."""
    bar = _ACTIVE[-1]._bar if _ACTIVE else None
    if bar is not None:
        bar.write(line, file=terminal())
        if isinstance(sys.stdout, _Tee):  # tqdm.write went to the terminal only: log it too
            sys.stdout._log.write(line + "\n")
    else:
        print(line, flush=True)


class StepProgress(ProgressBar):
    """Progress in optimizer steps (``trainer.global_step`` of ``trainer.max_steps``) with an ETA.

    Args:
        tty: draw a tqdm bar (True), print plain lines (False), or decide by stdout (None).
        lines: plain lines per run when not drawing a bar (one every ``max_steps / lines`` steps).

    Example (``conf/callbacks/default.yaml``)::

        progress_bar:
          _target_: mypt_lightning.training.console.StepProgress
    """

    def __init__(self, tty: bool | None = None, lines: int = 20):
        super().__init__()
        self.tty = tty
        self.lines = max(1, int(lines))
        self._enabled = True
        self._bar = None
        self._start_time = 0.0
        self._start_step = 0
        self._last_printed = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _draws_bar(self) -> bool:
        return terminal().isatty() if self.tty is None else bool(self.tty)

    def _total(self, trainer) -> int | None:
        total = trainer.max_steps
        return total if total and total > 0 else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        self._start_time = time.perf_counter()
        self._start_step = self._last_printed = trainer.global_step
        _ACTIVE.append(self)
        if self._draws_bar():
            from tqdm.auto import tqdm

            # initial = the resumed step: the bar shows 7/200, and its rate (hence the ETA)
            # counts only the steps this process ran.
            try:
                columns = os.get_terminal_size(terminal().fileno()).columns
            except (OSError, ValueError, AttributeError):
                columns = 0
            width = {"dynamic_ncols": True} if columns else {"ncols": 100}  # a pty without a size says 0
            self._bar = tqdm(total=self._total(trainer), initial=trainer.global_step, desc="Training (steps)",
                             file=terminal(), leave=True, unit="step", **width)

    def _postfix(self, pl_module) -> dict[str, str]:
        metrics = getattr(pl_module, "last_step_metrics", None) or {}
        shown = {}
        if "train/loss" in metrics:
            shown["loss"] = f"{metrics['train/loss']:.4f}"
        if "train/tokens_per_sec" in metrics:
            shown["tok/s"] = f"{metrics['train/tokens_per_sec']:.0f}"
        return shown

    def status_line(self, trainer, pl_module) -> str:
        """``[mypt] step 60/1200 (5%) loss 2.3456 lr 3e-03 1234 tok/s elapsed 0:01:02 eta 0:19:40``."""
        step, total = trainer.global_step, self._total(trainer)
        elapsed = time.perf_counter() - self._start_time
        done = step - self._start_step
        eta = elapsed / done * (total - step) if total and done > 0 else float("nan")
        metrics = getattr(pl_module, "last_step_metrics", None) or {}
        parts = [f"[mypt] step {step}/{total or '?'}" + (f" ({100 * step / total:.0f}%)" if total else "")]
        if "train/loss" in metrics:
            parts.append(f"loss {metrics['train/loss']:.4f}")
        if "train/lr" in metrics:
            parts.append(f"lr {metrics['train/lr']:.2e}")
        if "train/tokens_per_sec" in metrics:
            parts.append(f"{metrics['train/tokens_per_sec']:.0f} tok/s")
        parts.append(f"elapsed {_duration(elapsed)} eta {_duration(eta)}")
        return " ".join(parts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._enabled or not trainer.is_global_zero or self._start_time == 0.0:
            return
        step = trainer.global_step
        total = self._total(trainer) or 0
        every = max(1, math.ceil(total / self.lines)) if total else 50
        due = step != self._last_printed and (step % every == 0 or step == total or step == self._start_step + 1)
        if due:
            self._last_printed = step
        if self._bar is not None:
            if step != self._bar.n:
                self._bar.set_postfix(self._postfix(pl_module), refresh=False)
                self._bar.update(step - self._bar.n)
            if due and isinstance(sys.stdout, _Tee):  # the bar is the terminal's; run.log gets the lines
                sys.stdout._log.write(self.status_line(trainer, pl_module) + "\n")
            if total and step >= total:
                self._close()  # Lightning's closing lines start on a line of their own
        elif due:
            print(self.status_line(trainer, pl_module), flush=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = getattr(pl_module, "last_val_metrics", None) or {}
        if not metrics:
            return
        sets: dict[str, list[str]] = {}
        for key, value in metrics.items():
            _, name, what = key.split("/", 2)
            sets.setdefault(name, []).append(f"{what} {_num(value)}")
        shown = " | ".join(f"{name}: " + " ".join(parts) for name, parts in sets.items())
        emit(f"[mypt] step {trainer.global_step} validation: {shown}")

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def __getstate__(self) -> dict:  # checkpoints pickle callbacks' state: not the bar
        return {**self.__dict__, "_bar": None}


__all__ = ["HARMLESS_WARNINGS", "HIDDEN_LOG_LINES", "StepProgress", "capture_run_log", "emit",
           "silence_known_noise", "terminal"]
