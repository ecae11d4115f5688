#!/usr/bin/env python
"""Phase 2 operator exact-match evaluation (the guide's eval_operator.py): an alias of
``tools/eval_gates.py --phase 2``; all of its options work here.

    python tools/eval_operator.py --model runs/phase2_operators/export -v --report op.json
"""
import sys

from mypt_lightning.gates.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="eval_operator.py", description=__doc__, default_phase="2"))
