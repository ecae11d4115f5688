"""Phase to phase: where a phase's weights come from, and whether it may start.

A phase starts from the previous phase's ``export/``: beside this run's directory for
single runs (``runs/<previous>/export``) and in the same sweep directory for a curriculum
run (``runs/multirun/<date>/<n>_<previous>/export``). After training, the phase's success
gate runs on the export and leaves ``gate_report.json`` next to it; a next phase refuses
to start from an export whose gate failed while ``curriculum.stop_on_gate_failure`` is on.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from mypt_lightning.errors import UserError

GATE_REPORT = "gate_report.json"


def export_candidates(output_dir: Path, previous: str) -> list[Path]:
    """Existing exports of phase ``previous`` next to ``output_dir``, oldest first."""
    parent = output_dir.parent
    found = [parent / previous / "export"]
    # <n>_<phase>, or <n>_<phase>-<swept values> when a sweep varies more than the phase
    jobs = [*parent.glob(f"*_{previous}/export"), *parent.glob(f"*_{previous}-*/export")]
    found += sorted(jobs, key=lambda p: p.stat().st_mtime)
    return [p for p in found if p.exists()]


def resolve_init_from(cfg: DictConfig, output_dir: Path) -> str | None:
    """The weights this run starts from (weights only), or None for a random init."""
    init_from = cfg.get("init_from")
    if init_from in (None, "", "none", "null"):
        return None
    if init_from != "auto":
        if not Path(init_from).exists():
            raise UserError(f"init_from={init_from}: no such file or directory")
        return str(init_from)
    previous = cfg.phase.get("previous")
    if not previous:
        base = Path(cfg.paths.base_model)
        if not base.exists():
            raise UserError(
                f"{cfg.phase.name} starts from the MyPT base model, expected at {base} (not found). "
                f"Put the base checkpoint there, or pass paths.base_model=PATH or init_from=PATH."
            )
        return str(base)
    candidates = export_candidates(output_dir, previous)
    if not candidates:
        raise UserError(
            f"{cfg.phase.name} starts from {previous}'s exported model, expected at "
            f"{output_dir.parent / previous / 'export'} (not found). Produce it with "
            f"`python run.py phase={previous}`, or pass init_from=PATH (null for a random init)."
        )
    export = candidates[-1]
    check_previous_gate(export, previous, cfg)
    return str(export)


def check_previous_gate(export: Path, previous: str, cfg: DictConfig) -> None:
    """Refuse to build on a phase whose gate failed (unless told to go on)."""
    report_path = export.parent / GATE_REPORT
    if not report_path.exists() or not cfg.curriculum.get("stop_on_gate_failure", True):
        return
    report = json.loads(report_path.read_text())
    if not report.get("passed", False):
        raise UserError(
            f"{previous} did not pass its success gate ({report_path}); not starting {cfg.phase.name}. "
            f"Improve {previous} and retrain it, or set curriculum.stop_on_gate_failure=false to go on anyway."
        )


def run_phase_gate(cfg: DictConfig, export_dir: Path) -> dict | None:
    """Run the phase's gate on ``export_dir``; write ``gate_report.json`` beside it.

    With ``curriculum.regression`` every earlier phase's gate runs too, and the report
    passes only when all of them do (a phase that made the model forget is not a pass).
    Returns a summary ``{"phase", "passed", "report"}``, or None for phases without a gate
    (1b, the context extension, is judged by its validation loss).
    """
    from mypt_lightning.gates import GATES, evaluate
    from mypt_lightning.inference.generation import load_policy

    number = str(cfg.phase.number)
    if not number.isdigit() or int(number) not in GATES:
        return None
    policy = load_policy(str(export_dir), device="auto")
    report = evaluate(policy, int(number), regression=bool(cfg.curriculum.get("regression", False)),
                      max_cases=cfg.curriculum.get("gate_max_cases"),
                      model_name=str(export_dir), batch_size=cfg.curriculum.get("gate_batch_size"))
    path = export_dir.parent / GATE_REPORT
    report.write(str(path))
    return {"phase": int(number), "passed": bool(report.passed), "report": str(path)}
