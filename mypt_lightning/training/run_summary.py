"""The end-of-run summary ``train()`` prints (rank 0): what the run did, how well, and where it went.

    [mypt] ---- summary of cpu_phase1_gate ----
      steps         1200/1200 in 0:02:31 (8123 tokens/s, validation and gates included)
      train loss    0.4210 (last step)
      val loss      val 0.4630
      gate          phase 1 format_lock on export/: PASSED
                      pass_rate       0.960 >= 0.90  ok
                      answers_in_de   0.375 >= 0.50  FAILED  -> more German data and more steps
      answers       EN  Say hello.  ->  Hello!
                    DE  Sag hallo.  ->  Hallo!
      run dir       runs/cpu_phase1_gate
      ...

A failed criterion shows its ``hint`` (``Criterion.hint`` in ``mypt_lightning/gates/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_USER = re.compile(r"<myPT_user>(.*?)</myPT_user>", re.S)
_TAGS = re.compile(r"</?myPT_[a-z_]+>")


@dataclass
class RunFacts:
    """What the summary needs from a finished run (``train()`` fills it in)."""

    run_name: str
    output_dir: Path
    global_step: int
    max_steps: int | None = None
    start_step: int = 0
    seconds: float = 0.0
    tokens: int = 0
    train_loss: float | None = None
    val_metrics: dict[str, float] = field(default_factory=dict)
    gate: dict | None = None  # a gate result's to_dict() (criteria, cases)
    gate_where: str = ""  # "export/" or "step 1200 (training)"
    earlier_gates: list[dict] = field(default_factory=list)  # curriculum.regression: phases 1..N-1
    gate_report: Path | None = None
    export_dir: Path | None = None
    logs: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    interrupted: bool = False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def gate_lines(gate: dict, where: str = "") -> list[str]:
    """The verdict and one line per criterion (value, threshold, ok / FAILED -> hint)."""
    verdict = "PASSED" if gate.get("passed") else "FAILED"
    lines = [f"phase {gate.get('phase')} {gate.get('name', '')}{' on ' + where if where else ''}: {verdict}"]
    width = max((len(c["metric"]) for c in gate.get("criteria", [])), default=0)
    for c in gate.get("criteria", []):
        actual = c.get("actual")
        shown = "n/a" if actual is None else f"{actual:.3f}"
        if c.get("skipped"):
            lines.append(f"  {c['metric']:<{width}}  not measured on this subset (skipped)")
            continue
        status = "ok" if c.get("ok") else "FAILED"
        hint = f"  -> {c['hint']}" if not c.get("ok") and c.get("hint") else ""
        lines.append(f"  {c['metric']:<{width}}  {shown} {c['op']} {c['value']:.2f}  {status}{hint}")
    return lines


def sample_answers(gate: dict) -> list[str]:
    """One English and one German prompt with the model's answer (phase 1: its first prompts)."""
    lines = []
    for lang in ("en", "de"):
        case = next((c for c in gate.get("cases", []) if c.get("language") == lang), None)
        if case is None:
            continue
        users = _USER.findall(case.get("prompt", ""))
        prompt = users[-1].strip() if users else case.get("id", "")
        answer = (case.get("details") or {}).get("answer")
        if answer is None:
            answer = _TAGS.sub(" ", case.get("output", "")).strip()
        verdict = "" if case.get("passed") else f"  (fail: {case.get('reason', '')})"
        lines.append(f"{lang.upper()}  {prompt}  ->  {answer!r}{verdict}")
    return lines


def summary_lines(facts: RunFacts) -> list[str]:
    """The summary as lines (printed by :func:`print_summary`)."""
    out = [f"[mypt] ---- summary of {facts.run_name} ----"]

    def row(label: str, text: str) -> None:
        out.append(f"  {label:<13} {text}")

    def more(text: str) -> None:
        out.append(f"  {'':<13} {text}")

    steps = f"{facts.global_step}/{facts.max_steps}" if facts.max_steps else str(facts.global_step)
    ran = facts.global_step - facts.start_step
    speed = f", {facts.tokens / facts.seconds:.0f} tokens/s, validation and gates included" if facts.seconds > 0 and facts.tokens else ""
    resumed = f"; resumed at step {facts.start_step}, {ran} steps in this process" if facts.start_step else ""
    row("steps", f"{steps} in {_duration(facts.seconds)}{speed}{resumed}" + (" (stopped early)" if facts.interrupted else ""))
    if facts.train_loss is not None:
        row("train loss", f"{facts.train_loss:.4f} (last step)")
    val = {k.split("/")[1]: v for k, v in facts.val_metrics.items() if k.endswith("/loss")}
    if val:
        row("val loss", " | ".join(f"{name} {loss:.4f}" for name, loss in val.items()))
    if facts.gate is not None:
        first, *rest = gate_lines(facts.gate, facts.gate_where)
        row("gate", first)
        for line in rest:
            more(line)
        if not facts.gate.get("passed"):
            failed = [c["metric"] for c in facts.gate.get("criteria", []) if not c.get("ok")]
            more(f"failed: {', '.join(failed) or 'see the report'}; the failed cases and their reasons are in the report")
        if int(facts.gate.get("phase", 0) or 0) == 1:
            answers = sample_answers(facts.gate)
            if answers:
                row("answers", answers[0])
                for line in answers[1:]:
                    more(line)
    for earlier in facts.earlier_gates:  # the regression gate: did this phase keep the earlier ones?
        first, *rest = gate_lines(earlier, facts.gate_where)
        row("regression", first)
        for line in rest:
            more(line)
    d = facts.output_dir
    row("run dir", str(d))
    if (d / "checkpoints").is_dir():
        row("checkpoints", f"{d / 'checkpoints'} (last.ckpt: resume with ckpt_path=last)")
    if facts.export_dir is not None and facts.export_dir.exists():
        row("export", f"{facts.export_dir} (the next phase's init_from)")
    if facts.gate_report is not None:
        row("gate report", str(facts.gate_report))
    if (d / "gates").is_dir():
        row("gate samples", str(d / "gates"))
    row("logs", ", ".join([*facts.logs, str(d / "run.log")]))
    if facts.plots:
        row("plots", f"{facts.plots[0].parent}/ ({', '.join(p.name for p in facts.plots if p.parent == facts.plots[0].parent)})")
        sweep = sorted({p.parent for p in facts.plots} - {facts.plots[0].parent})
        for folder in sweep:
            more(f"{folder}/ (all jobs of the sweep)")
    return out


def print_summary(facts: RunFacts) -> None:
    print("\n".join(summary_lines(facts)), flush=True)


__all__ = ["RunFacts", "gate_lines", "print_summary", "sample_answers", "summary_lines"]
