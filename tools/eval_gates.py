#!/usr/bin/env python
"""Run a phase's success gate on a model; exit 0 only if it passes.

    python tools/eval_gates.py --model runs/phase1_format_lock/export --phase 1 --report gate_p1.json
    python tools/eval_gates.py --model runs/phase5_simple_toolcall/export --phase 5 --regression --report r.json

The JSON report lists every prompt, output and verdict. --regression also runs every
earlier phase's gate (they must pass too) and the OOD sets data/eval_ood/phase{3..N}_*.jsonl
(their pass rates are reported as warnings). Exit status: 0 passed, 1 failed, 2 bad input.
See docs/inference_and_gates.md for what each gate checks.
"""
import sys

from mypt_lightning.gates.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="eval_gates.py", description=__doc__))
