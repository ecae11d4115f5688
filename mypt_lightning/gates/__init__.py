"""The phase success gates (SFT guide): a trained phase is done when its gate passes.

    phase 1  format_lock      closes with </myPT_assistant><myPT_eot> within 20 tokens, EN + DE
    phase 2  operators        COPY/WRAP/EXTRACT exact match on unseen payloads > 80%
    phase 3  chat             format, echo, anti-echo, user's language, cites with context
    phase 4  multiturn        topic and language kept over 3 turns, clean turn boundaries
    phase 5  simple_toolcall  right tool + valid JSON > 90%, NO_TOOL > 80%, grounded answers cite
    phase 6  agentic_rag      tool chains finish without loops, grounded, think before tools, cite

One module per gate (``phase1`` ... ``phase6``), shared pieces in ``base``, the OOD sets
in ``ood``, running and the JSON report in ``runner``, the command line in ``cli``
(``tools/eval_gates.py``). ``callbacks.GateCallback`` runs a gate during training.

>>> from mypt_lightning.gates import evaluate                        # doctest: +SKIP
>>> report = evaluate(ModelPolicy(model), phase=3, regression=True)   # doctest: +SKIP
>>> report.passed, report.write("gate_phase3.json")                  # doctest: +SKIP
"""

from mypt_lightning.gates.base import Case, CaseResult, Criterion, Gate, GateResult
from mypt_lightning.gates.runner import GATES, EvalReport, evaluate, get_gate, parse_phase

__all__ = ["Case", "CaseResult", "Criterion", "EvalReport", "GATES", "Gate", "GateResult", "evaluate", "get_gate",
           "parse_phase"]
