#!/usr/bin/env python
"""The full SFT evaluation (the guide's sft_eval_suite.py): the phase 3 gate (format, echo,
anti-echo, language, citations) plus the regression gates of phases 1-2 and the OOD sets.
An alias of ``tools/eval_gates.py --phase 3 --regression``; --phase picks another phase.

    python tools/sft_eval_suite.py --model runs/phase3_chat_sft/export -v --report suite.json
"""
import sys

from mypt_lightning.gates.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="sft_eval_suite.py", description=__doc__, default_phase="3", default_regression=True))
