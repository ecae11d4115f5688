"""The CPU curriculum proof (issue 14): phase 1 then phase 2, both gates passed, as a user runs it.

``python run.py -m experiment=cpu_curriculum phase=phase1_format_lock,phase2_operators`` on the
data ``make curriculum-data`` builds: a tiny model from scratch through phase 1 (format lock), then
phase 2 (operators) initialised from phase 1's export with phase 1 replayed in its mix. Both
phases' success gates must pass on their exports, and phase 2's report carries the regression gate
(phase 1's gate on phase 2's export). About 20 minutes on 2 cores: marked ``curriculum``, which
``make test`` (CI) leaves out and ``make test-all`` runs::

    pytest -m curriculum tests/test_curriculum_cpu.py -s
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.curriculum
@pytest.mark.timeout(3600)
def test_tiny_model_passes_phase1_then_phase2_on_cpu(tmp_path):
    demo = tmp_path / "data" / "demo"
    r = subprocess.run(["make", "-o", "setup", "curriculum-data", f"DEMO={demo}", f"PY={sys.executable}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f"make curriculum-data failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    runs = tmp_path / "runs"
    r = subprocess.run([sys.executable, "run.py", "-m", "experiment=cpu_curriculum",
                        "phase=phase1_format_lock,phase2_operators", f"paths.data_dir={demo}",
                        f"paths.output_root={runs}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3000, env={**os.environ, "WANDB_MODE": "offline"})
    assert r.returncode == 0, f"the curriculum failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"

    [sweep] = (runs / "multirun").iterdir()
    phase1, phase2 = sweep / "0_phase1_format_lock", sweep / "1_phase2_operators"
    report1 = json.loads((phase1 / "gate_report.json").read_text())
    report2 = json.loads((phase2 / "gate_report.json").read_text())
    assert report1["passed"] and [g["phase"] for g in report1["gates"]] == [1], report1["gates"][0]["metrics"]
    # phase 2's report: the regression gate (phase 1 again) and phase 2's own, both passed
    assert report2["regression"] and [g["phase"] for g in report2["gates"]] == [1, 2]
    gates2 = {g["phase"]: g for g in report2["gates"]}
    assert gates2[2]["metrics"]["exact_match"] > 0.80, gates2[2]["metrics"]
    assert gates2[1]["passed"], gates2[1]["metrics"]
    assert report2["passed"]

    # phase 2 started from phase 1's export (init_from=auto), phase 1 from scratch
    assert json.loads((phase1 / "run_info.json").read_text())["init_from"] is None
    assert Path(json.loads((phase2 / "run_info.json").read_text())["init_from"]) == phase1 / "export"
    # the curriculum callback logged both gates over phase 2's steps (the regression curve)
    with open(phase2 / "csv" / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert any(row.get("gate/phase1/pass_rate") for row in rows)
    assert any(row.get("gate/phase2/exact_match") for row in rows)
    # the sweep's plots show both phases on one time axis
    assert list((sweep / "plots").glob("*.png")), sorted(p.name for p in sweep.iterdir())
