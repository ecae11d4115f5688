"""Which steps run. A step runs when its output is missing and needed downstream, when the
recipe behind it changed (its fingerprint differs from the one its output was made with), when
a step before it ran, or with ``force``; an output made outside the pipeline is kept.
Intermediate files keep their fingerprints in ``<work_dir>/pipeline_state.json``, a dataset in
the ``command`` of its ``dataset_metadata.json`` (so it survives a deleted work dir).

A dataset whose making failed after it was written (prepare's own checks, or the validate
step after it) is marked failed in the state file with that fingerprint, so the next run
rebuilds and checks it again instead of calling it up to date."""

from __future__ import annotations

import json
from pathlib import Path

from data_modules.atomic_write import write_text_atomic

from .plan import Plan, Step

STATE_FILE = "pipeline_state.json"
FINGERPRINT_TAG = "# prepare_phase fingerprint "
FAILED_PREFIX = "failed:"  # state-file key prefix of a dataset that failed its checks


def load_state(state_dir: Path | None) -> dict:
    path = (state_dir or Path(".")) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if state_dir and path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _recorded(step: Step, state: dict) -> str | None:
    """The fingerprint the step's output was made with: a dataset keeps it in its metadata
    (so it survives a deleted work dir), intermediate files in the work dir's state file."""
    if not step.outputs:
        return None
    if step.target:
        try:
            meta = json.loads((step.outputs[0] / "dataset_metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        command = str(meta.get("command") or "")
        return command.split(FINGERPRINT_TAG, 1)[1].strip() if FINGERPRINT_TAG in command else None
    return state.get(str(step.outputs[0]))


def _write_state(state_dir: Path, state: dict) -> None:
    write_text_atomic(state_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")


def _checked_datasets(plan: Plan, step: Step) -> list[Step]:
    """The dataset steps whose output ``step`` makes or checks: itself, or what it validates."""
    return [s for s in [step, *(plan.steps[u] for u in step.upstream)] if s.target and s.outputs]


def save_state(plan: Plan, step: Step) -> None:
    """Record a step that succeeded (and clear failure marks of the datasets it made or checked)."""
    if step.state_dir is None:
        return
    state = load_state(step.state_dir)
    if step.outputs and not step.target:
        state[str(step.outputs[0])] = step.fingerprint
    for dataset in _checked_datasets(plan, step):
        state.pop(FAILED_PREFIX + str(dataset.outputs[0]), None)
    _write_state(step.state_dir, state)


def mark_failed(plan: Plan, step: Step) -> None:
    """``step`` raised: the datasets it made or checked must not count as up to date."""
    datasets = _checked_datasets(plan, step)
    if step.state_dir is None or not datasets:
        return
    state = load_state(step.state_dir)
    for dataset in datasets:
        state[FAILED_PREFIX + str(dataset.outputs[0])] = dataset.fingerprint
    _write_state(step.state_dir, state)


def decide(plan: Plan, force: bool = False) -> list[str]:
    """Per step: "run", or "skip: <why>" (see the module docstring for the rules)."""
    n = len(plan.steps)
    states = {}
    exists, missing, changed, outside = [False] * n, [False] * n, [False] * n, [False] * n
    for i, s in enumerate(plan.steps):
        if s.state_dir not in states:
            states[s.state_dir] = load_state(s.state_dir)
        recorded = _recorded(s, states[s.state_dir])
        exists[i] = bool(s.outputs) and all(p.exists() for p in s.outputs)
        missing[i] = bool(s.outputs) and not exists[i]
        failed = bool(s.outputs) and states[s.state_dir].get(FAILED_PREFIX + str(s.outputs[0])) == s.fingerprint
        changed[i] = force or failed or (exists[i] and recorded is not None and recorded != s.fingerprint)
        outside[i] = exists[i] and recorded is None
    run = [changed[i] or (missing[i] and plan.steps[i].target) for i in range(n)]
    grew = True
    while grew:
        grew = False
        for i, s in enumerate(plan.steps):
            if not run[i] and any(run[u] for u in s.upstream):
                run[i] = grew = True
            if run[i]:
                for u in s.upstream:
                    if missing[u] and not run[u]:
                        run[u] = grew = True
    status = []
    for i, s in enumerate(plan.steps):
        if run[i]:
            status.append("run")
        elif outside[i]:
            status.append("skip: output exists, made outside this pipeline (--force rebuilds it)")
        elif exists[i]:
            status.append("skip: up to date")
        elif s.outputs:
            status.append("skip: not needed (what it feeds is up to date)")
        else:
            status.append("skip: dataset unchanged")
    return status
