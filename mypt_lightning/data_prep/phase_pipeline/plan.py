"""The plan: the ordered steps of the pipelines to run, the datasets they build and the
warnings to show. A step's fingerprint covers its command and everything upstream of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Step:
    group: str  # the phase name, or "pretrain_replay"
    label: str
    command: str  # the equivalent command line, as planned
    action: Callable[["Step"], str | None]
    outputs: list[Path] = field(default_factory=list)
    upstream: list[int] = field(default_factory=list)
    state_dir: Path | None = None
    target: bool = False  # a dataset the pipeline exists to build: made when missing
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    resolved: str | None = None  # the command with run-time values filled in


@dataclass
class PhaseTarget:
    phase: str
    dataset_dir: Path
    components: list[dict]
    eval_sets: dict


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    targets: list[PhaseTarget] = field(default_factory=list)

    def add(self, step: Step) -> int:
        h = hashlib.sha256(step.command.encode())
        for u in step.upstream:
            h.update(self.steps[u].fingerprint.encode())
        step.fingerprint = h.hexdigest()[:16]
        self.steps.append(step)
        return len(self.steps) - 1
