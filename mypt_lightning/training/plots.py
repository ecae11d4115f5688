"""PNG plots of a run (or several) from the run's own logs.

A run directory holds its metrics in ``csv/metrics.csv`` (``logger=csv``) and/or a W&B
offline file ``wandb/offline-run-*/run-*.wandb`` (``logger=wandb`` with ``WANDB_MODE=offline``);
:func:`load_run` reads whichever is there (the CSV first). :func:`plot_runs` draws, one PNG
each plus ``overview.png`` with all of them: train loss, validation loss per eval set, learning
rate, gradient norm, tokens/s, supervised fraction and the gate pass rates, over optimizer steps.

Several runs are drawn on the same axes: overlaid (a sweep: every run from step 0), or
chained (the phases of a curriculum: phase k's steps start where phase k-1 ended).
``timeline="auto"`` chains when the runs are different phases (``run_info.json``), else overlays.

    >>> runs = [load_run("runs/multirun/2025-01-01_10-00-00/0_phase1_format_lock")]   # doctest: +SKIP
    >>> [p.name for p in plot_runs(runs, "plots")]                                    # doctest: +SKIP
    ['train_loss.png', 'val_loss.png', ..., 'overview.png']

``train()`` writes ``<run dir>/plots/`` at the end of every run (a sweep's job also refreshes
``<sweep dir>/plots/`` with all jobs so far); ``tools/plot_run.py`` does it on demand.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from data_modules.atomic_write import write_bytes_atomic
from mypt_lightning.errors import UserError

# (file stem, title, y label, which metrics: a regex whose group 1, if any, names the line)
PANELS: list[tuple[str, str, str, str]] = [
    ("train_loss", "train loss", "loss", r"train/loss"),
    ("val_loss", "validation loss", "loss", r"val/(.+)/loss"),
    ("lr", "learning rate", "lr", r"train/lr"),
    ("grad_norm", "gradient norm (before clipping)", "norm", r"train/grad_norm"),
    ("tokens_per_sec", "throughput", "tokens/s", r"train/tokens_per_sec"),
    ("supervised_fraction", "supervised fraction of tokens", "fraction", r"train/supervised_fraction"),
    # Every gate metric is a rate in [0, 1]; "passed" is the verdict, not a rate.
    ("gate_pass_rates", "gate pass rates", "rate", r"gate/(phase\d+/(?!passed$).+)"),
]


@dataclass
class RunSeries:
    """One run's metrics: ``series[name] = (steps, values)``, sorted by step."""

    name: str
    path: Path
    phase: str | None = None
    source: str = ""
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        return max((s[0][-1] for s in self.series.values() if s[0]), default=0)


def _as_series(points: dict[str, dict[int, float]]) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for name, by_step in points.items():
        steps = sorted(by_step)
        out[name] = (steps, [by_step[s] for s in steps])
    return out


def read_csv_metrics(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """The series of a Lightning CSV logger's ``metrics.csv``.

    Rows of one step are merged; a step logged twice (a resumed run appends the steps it
    redoes) keeps the later value. Empty cells are no value; a repeated header row (an
    appended run's) starts a new column layout.
    """
    points: dict[str, dict[int, float]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        header: list[str] | None = None
        for row in csv.reader(fh):
            if not row:
                continue
            if header is None or row[0] == "step":
                header = row
                continue
            record = dict(zip(header, row))
            try:
                step = int(float(record.get("step", "")))
            except ValueError:
                continue
            for key, text in record.items():
                if key == "step" or text in ("", None):
                    continue
                try:
                    points.setdefault(key, {})[step] = float(text)
                except ValueError:
                    pass  # a text column: nothing to plot
    return _as_series(points)


# The W&B offline file is a LevelDB-style log (what wandb's former Python DataStore read):
# a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte header
# (crc32 4, length 2, type 1: full / first / middle / last) around a protobuf ``Record``.
_WANDB_HEADER = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(data: bytes):
    if len(data) < _WANDB_HEADER or data[:4] != b":W&B":
        raise UserError("not a W&B run file (no ':W&B' header)")
    pos, pending = _WANDB_HEADER, b""
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # the rest of a block too small for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += room
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_wandb_offline(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """The numeric history of a W&B offline run file (``run-<id>.wandb``), by optimizer step
    (Lightning's ``trainer/global_step`` key; W&B's own ``_step`` where that is missing)."""
    from wandb.proto import wandb_internal_pb2 as pb

    points: dict[str, dict[int, float]] = {}
    for raw in _wandb_records(Path(path).read_bytes()):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # a torn record at the end of a killed run's file
            continue
        if record.WhichOneof("record_type") != "history":
            continue
        values = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            try:
                value = json.loads(item.value_json)
            except ValueError:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = float(value)
        step = values.pop("trainer/global_step", values.get("_step"))
        if step is None:
            continue
        for key, value in values.items():
            if not key.startswith("_") and key != "epoch":
                points.setdefault(key, {})[int(step)] = value
    return _as_series(points)


def load_run(run_dir: str | Path) -> RunSeries:
    """The metrics of the run in ``run_dir`` (its CSV log, else its W&B offline files)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory")
    phase = None
    info = run_dir / "run_info.json"
    if info.exists():
        try:
            phase = json.loads(info.read_text(encoding="utf-8")).get("phase")
        except ValueError:
            pass
    run = RunSeries(run_dir.name, run_dir, phase)
    csv_path = run_dir / "csv" / "metrics.csv"
    wandb_files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if csv_path.exists():
        run.series, run.source = read_csv_metrics(csv_path), str(csv_path)
    elif wandb_files:
        merged: dict[str, dict[int, float]] = {}
        for path in wandb_files:  # a resumed run's later file wins for the steps it redid
            for key, (steps, values) in read_wandb_offline(path).items():
                merged.setdefault(key, {}).update(zip(steps, values))
        run.series, run.source = _as_series(merged), ", ".join(map(str, wandb_files))
    else:
        raise UserError(f"{run_dir}: no logs to plot (expected csv/metrics.csv from logger=csv, or "
                        f"wandb/offline-run-*/run-*.wandb from logger=wandb with WANDB_MODE=offline)")
    return run


def choose_timeline(runs: list[RunSeries], timeline: str = "auto") -> str:
    """``chain`` for the phases of a curriculum (every run a different phase), else ``overlay``."""
    if timeline != "auto":
        return timeline
    phases = [r.phase for r in runs]
    return "chain" if len(runs) > 1 and None not in phases and len(set(phases)) == len(phases) else "overlay"


@dataclass
class Plot:
    """One written PNG and the lines on it: ``lines[label] = (x, y)`` as drawn."""

    path: Path
    lines: dict[str, tuple[list[float], list[float]]]


def panel_lines(runs: list[RunSeries], pattern: str, offsets: list[int]) -> dict[str, tuple[list, list]]:
    """The lines of one panel: every metric matching ``pattern`` of every run, x shifted by the run's offset."""
    lines = {}
    for run, offset in zip(runs, offsets):
        for key in sorted(run.series):
            match = re.fullmatch(pattern, key)
            if not match:
                continue
            steps, values = run.series[key]
            if not any(math.isfinite(v) for v in values):
                continue
            part = match.group(1) if match.groups() else None
            label = ": ".join(x for x in ((run.name if len(runs) > 1 else None), part) if x) or key
            lines[label] = ([s + offset for s in steps], list(values))
    return lines


def _draw(ax, title: str, ylabel: str, lines: dict, boundaries: list[tuple[int, str]], xlabel: str) -> None:
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label, linewidth=1.2, marker="." if len(x) < 30 else None)
    for step, name in boundaries:
        ax.axvline(step, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(name, (step, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                    va="top", ha="right", color="grey")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1 or boundaries:
        ax.legend(fontsize=6, loc="best")


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def plot_runs(runs: list[RunSeries], output_dir: str | Path, timeline: str = "auto") -> list[Plot]:
    """Write one PNG per panel that has data, plus ``overview.png``; returns what was drawn.

    ``timeline``: ``overlay`` (every run from its own step 0), ``chain`` (each run after the
    previous one, in the order given) or ``auto`` (:func:`choose_timeline`).
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    if not runs:
        raise UserError("no runs to plot")
    timeline = choose_timeline(runs, timeline)
    if timeline not in ("overlay", "chain"):
        raise UserError(f"timeline must be overlay, chain or auto, got {timeline!r}")
    offsets, boundaries, total = [], [], 0
    for run in runs:
        offsets.append(total if timeline == "chain" else 0)
        if timeline == "chain":
            boundaries.append((total, run.phase or run.name))
            total += run.last_step
    if timeline == "chain":
        boundaries = boundaries[1:] if len(runs) > 1 else []
    xlabel = "optimizer step" + (" (runs one after another)" if timeline == "chain" else "")
    output_dir = Path(output_dir)
    drawn, plots = [], []
    for stem, title, ylabel, pattern in PANELS:
        lines = panel_lines(runs, pattern, offsets)
        if not lines:
            continue
        fig = Figure(figsize=(7, 4))
        _draw(fig.add_subplot(), title, ylabel, lines, boundaries, xlabel)
        plots.append(Plot(_save(fig, output_dir / f"{stem}.png"), lines))
        drawn.append((title, ylabel, lines))
    if drawn:
        cols = 2 if len(drawn) > 1 else 1
        rows = math.ceil(len(drawn) / cols)
        fig = Figure(figsize=(7 * cols, 3.6 * rows))
        for i, (title, ylabel, lines) in enumerate(drawn):
            _draw(fig.add_subplot(rows, cols, i + 1), title, ylabel, lines, boundaries, xlabel)
        fig.tight_layout()
        plots.append(Plot(_save(fig, output_dir / "overview.png"), {}))
    return plots


def write_run_plots(run_dir: str | Path, sweep_dir: str | Path | None = None) -> list[Path]:
    """What ``train()`` calls at the end of a run: ``<run dir>/plots/*.png`` (nothing when the
    run kept no logs), and for a sweep's job ``<sweep dir>/plots/`` with every job so far."""
    run_dir = Path(run_dir)
    try:
        run = load_run(run_dir)
    except UserError:
        return []  # logger=none: nothing to draw
    written = [p.path for p in plot_runs([run], run_dir / "plots")]
    if sweep_dir is not None:
        jobs = []
        for job in sorted(Path(sweep_dir).iterdir(), key=_job_order):
            if job.is_dir() and not job.name.startswith(".") and job.name != "plots":
                try:
                    jobs.append(load_run(job))
                except UserError:
                    continue
        if len(jobs) > 1:
            written += [p.path for p in plot_runs(jobs, Path(sweep_dir) / "plots")]
    return written


def _job_order(path: Path):
    """Sweep job directories (``<n>_<name>``) by job number, then by name."""
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else math.inf, path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plot_run.py",
        description="PNG plots of one or more runs from their logs (csv/metrics.csv or W&B offline files): "
                    "train loss, validation loss per eval set, lr, grad norm, tokens/s, supervised fraction, "
                    "gate pass rates. Several runs are overlaid (a sweep) or chained on one step axis "
                    "(the phases of a curriculum, in the order given).",
        epilog="Examples:\n  python tools/plot_run.py runs/cpu_demo\n"
               "  python tools/plot_run.py runs/multirun/2025-01-01_10-00-00/*_phase* --output plots/sweep\n"
               "  python tools/plot_run.py runs/phase1_format_lock runs/phase2_operators --timeline chain",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>, sweep job dirs)")
    parser.add_argument("--output", default=None,
                        help="where the PNGs go (default: RUN_DIR/plots for one run, ./plots for several)")
    parser.add_argument("--timeline", choices=["auto", "overlay", "chain"], default="auto",
                        help="overlay: every run from step 0; chain: each run after the previous one; "
                             "auto: chain when the runs are different phases (default)")
    args = parser.parse_args(argv)
    runs = [load_run(d) for d in args.run_dirs]
    output = Path(args.output) if args.output else (runs[0].path / "plots" if len(runs) == 1 else Path("plots"))
    plots = plot_runs(runs, output, args.timeline)
    if not plots:
        raise UserError(f"nothing to plot: the logs of {', '.join(args.run_dirs)} hold none of the plotted metrics")
    for run in runs:
        print(f"{run.name}: {run.source}")
    print(f"wrote {len(plots)} plots ({choose_timeline(runs, args.timeline)}) to {output}/: "
          + ", ".join(p.path.name for p in plots))
    return 0


__all__ = ["PANELS", "Plot", "RunSeries", "choose_timeline", "load_run", "main", "plot_runs", "read_csv_metrics",
           "read_wandb_offline", "write_run_plots"]
