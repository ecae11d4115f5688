#!/usr/bin/env python
"""PNG plots of one or more runs from their own logs (csv/metrics.csv or W&B offline files).

    python tools/plot_run.py runs/cpu_demo                                   # -> runs/cpu_demo/plots/
    python tools/plot_run.py runs/multirun/<date>/*_phase* --output plots    # a sweep, overlaid
    python tools/plot_run.py runs/phase1_format_lock runs/phase2_operators   # a curriculum, one step axis

Exit status: 0 written, 2 bad input (not a run directory, no logs). See docs/plots_and_console.md.
"""
import sys

from mypt_lightning.errors import run_cli
from mypt_lightning.training.plots import main

if __name__ == "__main__":
    sys.exit(run_cli(main, "plot_run.py"))
