"""The proof on CPU (issue 5): a tiny model trained from scratch on phase-1 data with
``experiment=cpu_phase1_gate`` passes the phase-1 success gate (>= 90% of its prompts).

Slow (several minutes on 2 cores): ``pytest -m slow tests/test_gate_cpu_proof.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import mypt_lightning.config  # noqa: F401
from mypt_lightning.gates import GATES, evaluate
from mypt_lightning.inference.generation import load_policy
from mypt_lightning.inference.generation import ModelPolicy
from mypt_lightning.weights.checkpoint import load_weights
from mypt_lightning.model import MyPT
from mypt_lightning.training.train import train

ROOT = Path(__file__).resolve().parents[1]


def build_demo_data(demo: Path) -> Path:
    """The phase-1 demo dataset, built by the Makefile's own `demo-data` recipe (into ``demo``;
    ``-o setup``: the environment is already set up, this interpreter runs the tools)."""
    r = subprocess.run(["make", "-o", "setup", "demo-data", f"DEMO={demo}", f"PY={sys.executable}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"make demo-data failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return demo / "sft_phase1_format_lock"


@pytest.mark.slow
def test_tiny_model_from_scratch_passes_the_phase1_gate(tmp_path):
    start = time.perf_counter()
    build_demo_data(tmp_path / "data" / "demo")
    out = tmp_path / "run"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=cpu_phase1_gate", f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={out}",
            f"paths.output_root={tmp_path}", "callbacks.progress_bar=null"])
    metrics = train(cfg)
    trained = time.perf_counter() - start

    # the callback's last run (final weights) and a fresh evaluation of the export agree
    assert metrics["gate/phase1/pass_rate"] >= 0.9, metrics
    report = evaluate(load_policy(str(out / "export"), "cpu"), 1)
    gate = report.gates[0]
    assert report.passed, gate.summary()
    assert gate.metrics["pass_rate"] >= 0.9
    assert gate.metrics["pass_rate"] == pytest.approx(metrics["gate/phase1/pass_rate"])
    # the gate measures something: the same architecture untrained fails it
    untrained = GATES[1].run(ModelPolicy(MyPT(load_weights(out / "export")[1]).eval()))
    assert not untrained.passed and untrained.metrics["pass_rate"] < 0.5
    # the command line agrees (exit 0 = gate passed)
    r = subprocess.run([sys.executable, "tools/eval_gates.py", "--model", str(out / "export"), "--phase", "1",
                        "--device", "cpu", "--report", str(tmp_path / "gate.json")], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = sorted(int(p.stem[-6:]) for p in (out / "gates").glob("phase1_step*.json"))
    history = {}
    for s in steps:
        run = json.loads((out / "gates" / f"phase1_step{s:06d}.json").read_text())
        m = run["metrics"]
        history[s] = (f"{'PASS' if run['passed'] else 'fail'} {m['pass_rate']:.2f} "
                      f"en {m.get('answers_in_en', 0):.2f} de {m.get('answers_in_de', 0):.2f}")
    print(f"\n[cpu proof] data + training {trained:.0f} s; gate by step (pass rate, answers_in_en/de): {history}; "
          f"final {gate.metrics['pass_rate']:.2f}; untrained {untrained.metrics['pass_rate']:.2f}; "
          f"total {time.perf_counter() - start:.0f} s")
