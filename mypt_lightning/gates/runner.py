"""Run a phase's gate (or the regression set) and write the JSON report.

``evaluate(policy, phase=5, regression=True)`` runs the gates of phases 1..5 and the OOD
sets of phases 3..5; the report passes when every gate passes (OOD pass rates are
warnings). The report (``EvalReport.to_dict``)::

    {"phase": 5, "regression": true, "passed": false, "model": "...", "created": "...",
     "gates": [{"phase": 1, "name": "format_lock", "passed": true, "metrics": {...},
                "criteria": [{"metric": "pass_rate", "op": ">=", "value": 0.9, "actual": 0.96,
                              "ok": true, "text": "..."}],
                "cases": [{"id", "category", "language", "prompt", "output", "verdict",
                           "passed", "checks", "reason", "details"}, ...]}, ...],
     "ood": [{"file": "data/eval_ood/phase5_toolcall_ood.jsonl", "pass_rate": 0.7, "cases": [...]}],
     "warnings": ["OOD phase5_toolcall_ood.jsonl: pass rate 0.70 (35/50)", ...]}
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mypt_lightning.gates import phase1, phase2, phase3, phase4, phase5, phase6
from mypt_lightning.gates.base import CaseResult, Gate, GateResult
from mypt_lightning.gates.ood import DEFAULT_OOD_DIR, OODResult, evaluate_file, ood_files

GATES: dict[int, Gate] = {g.phase: g for g in (phase1.GATE, phase2.GATE, phase3.GATE, phase4.GATE, phase5.GATE,
                                               phase6.GATE)}
REPORT_FORMAT_VERSION = 1


def parse_phase(value) -> int:
    """1..6 from 3, "3", "phase3", "phase3_chat_sft"; ValueError otherwise (phase 1b has no gate)."""
    m = re.fullmatch(r"(?:phase)?(\d)(?:_[a-z0-9_]+)?", str(value).strip().lower())
    if not m or int(m.group(1)) not in GATES:
        raise ValueError(f"no gate for phase {value!r}; gates exist for phases {sorted(GATES)} "
                         "(phase 1b, context extension, has none)")
    return int(m.group(1))


def get_gate(phase) -> Gate:
    return GATES[parse_phase(phase)]


@dataclass
class EvalReport:
    phase: int
    regression: bool
    passed: bool
    gates: list[GateResult]
    ood: list[OODResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: str | None = None
    seconds: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def summary(self) -> str:
        lines = [g.summary() for g in self.gates]
        lines += [f"warning: {w}" for w in self.warnings]
        verdict = "PASSED" if self.passed else "FAILED"
        what = f"phase {self.phase}" + (" with regression" if self.regression else "")
        return "\n".join(lines + [f"{what}: {verdict} ({self.seconds:.0f} s)"])

    def to_dict(self) -> dict:
        return {"format_version": REPORT_FORMAT_VERSION, "phase": self.phase, "regression": self.regression,
                "passed": self.passed, "model": self.model, "created": self.created,
                "seconds": round(self.seconds, 2), "warnings": self.warnings,
                "gates": [g.to_dict() for g in self.gates], "ood": [o.to_dict() for o in self.ood]}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the JSON report atomically (data_modules.atomic_write)."""
        from data_modules.atomic_write import write_json_atomic

        return write_json_atomic(path, self.to_dict(), indent=2, ensure_ascii=False)


def evaluate(policy, phase, *, regression: bool = False, workspace=None, ood_dir: str | os.PathLike | None = None,
             max_cases: int | None = None, tokenizer=None, model_name: str | None = None,
             progress: Callable[[str, CaseResult], None] | None = None, protocol=None,
             batch_size: int | None = None) -> EvalReport:
    """Run phase ``phase``'s gate; with ``regression`` also every earlier gate and the OOD sets.
    ``protocol``: the profile the model was trained on (protocol_profiles; default ours).
    ``batch_size``: cases decoded together (None = the device's default, 1 = one at a time)."""
    start = time.perf_counter()
    number = parse_phase(phase)
    phases = list(range(1, number + 1)) if regression else [number]
    if workspace is None and any(GATES[p].needs_workspace for p in phases):
        from mypt_lightning.workspace.store import Workspace

        workspace = Workspace()
    if tokenizer is None:
        from mypt_lightning.tokens.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    results = []
    for p in phases:
        gate = GATES[p]
        callback = (lambda r, name=gate.name: progress(name, r)) if progress else None
        results.append(gate.run(policy, workspace=workspace, max_cases=max_cases, tokenizer=tokenizer,
                                progress=callback, protocol=protocol,
                                batch_size=batch_size))
    report = EvalReport(number, regression, all(r.passed for r in results), results, model=model_name)
    if regression:
        directory = Path(ood_dir) if ood_dir is not None else DEFAULT_OOD_DIR
        files = ood_files(directory, number)
        if number >= 3 and not files:
            report.warnings.append(f"no OOD sets (phase{{3..{number}}}_*.jsonl) found in {directory}")
        for k, path in files:
            result = evaluate_file(path, k, policy, workspace, tokenizer, max_cases, protocol=protocol,
                                   batch_size=batch_size)
            if progress:
                for case in result.cases:
                    progress(path.name, case)
            report.ood.append(result)
            report.warnings.append(result.summary())
            report.warnings += [f"skipped {s}" for s in result.skipped]
    for r in results:
        report.warnings += r.warnings
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["EvalReport", "GATES", "evaluate", "get_gate", "parse_phase"]
