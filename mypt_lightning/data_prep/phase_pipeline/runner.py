"""Running a plan: every step's status and command echoed, the steps that must run called,
their state saved; and the closing summary (datasets, training mixture, warnings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .plan import Plan
from .skipping import decide, mark_failed, save_state


def execute(plan: Plan, *, dry_run: bool = False, force: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run (or with ``dry_run`` only print) the plan; returns counts for the summary."""
    import time

    status = decide(plan, force)
    for w in plan.warnings:
        echo(f"\n!!! WARNING: {w}\n")
    n, ran = len(plan.steps), 0
    for i, (step, st) in enumerate(zip(plan.steps, status), 1):
        echo(f"[{i}/{n}] {step.group}: {step.label}  ({'would run' if dry_run and st == 'run' else st})")
        echo(f"    $ {step.command}")
        for note in step.notes:
            echo(f"    # {note}")
        if dry_run or st != "run":
            continue
        start = time.time()
        for p in step.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = step.action(step)
        except BaseException:
            mark_failed(plan, step)
            raise
        if step.resolved and step.resolved != step.command:
            echo(f"    $ {step.resolved}   (as run)")
        if result:
            echo("    " + result.replace("\n", "\n    "))
        save_state(plan, step)
        ran += 1
        echo(f"    done in {time.time() - start:.1f} s")
    return {"steps": n, "ran": ran, "would_run": status.count("run") if dry_run else 0,
            "skipped": sum(1 for s in status if s != "run"), "status": status}


def summarize(plan: Plan, result: dict, dry_run: bool) -> str:
    lines = ["", "=" * 78]
    if dry_run:
        lines.append(f"DRY RUN: {result['would_run']} of {result['steps']} steps would run; nothing was written.")
    else:
        lines.append(f"{result['ran']} of {result['steps']} steps ran, {result['skipped']} skipped.")
    for t in plan.targets:
        lines.append(f"{t.phase}: dataset {t.dataset_dir}" + ("" if t.dataset_dir.exists() else "  (not built yet)"))
        meta_path = t.dataset_dir / "dataset_metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            for split, st in meta.get("splits", {}).items():
                frac = (meta.get("supervised_fraction") or {}).get(split, st["supervised_tokens"] / max(1, st["tokens"]))
                lines.append(f"    {split:<5} {st['episodes']} episodes in {st['samples']} samples of "
                             f"{meta.get('block_size') or 'var.'} tokens, {frac:.1%} of episode tokens supervised")
        if t.components:
            lines.append("  training mixture (conf/data_mix, mixed at training time):")
        for c in t.components:
            there = Path(c["path"]).exists()
            lines.append(f"    {c['weight']:>5.0%}  {c['name']:<32} {c['path']}  {'ok' if there else 'MISSING'}")
        missing = [c for c in t.components if not Path(c["path"]).exists() and Path(c["path"]) != t.dataset_dir]
        if missing:
            lines.append("  missing datasets: build them first (--with_deps builds earlier phases, --with_replay the "
                         "pre-training replay), or train with data_mix=none")
        lines.append(f"  train: python run.py phase={t.phase}")
    for w in plan.warnings:
        lines.append(f"!!! WARNING: {w}")
    return "\n".join(lines)
