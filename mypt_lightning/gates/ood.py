"""Out-of-distribution sets: ``data/eval_ood/phase{3,4,5,6}_*.jsonl``, scored against their references.

The files are episodes in the usual JSONL schema (docs/design.md section 1) whose user
phrasings no generator template produces. The model replays every user turn of an
episode (its own answers become the history, as in the phase 4 gate); each turn is
compared with the episode's reference assistant messages for that turn::

    reference starts with assistant_toolcall NAME   the model's first block calls NAME (valid JSON)
    reference answers directly                      no tool call (phases 5-6), a non-empty answer
    always                                          clean </myPT_assistant><myPT_eot> end, the
                                                    turn's language (``_meta.expect.turn_languages``,
                                                    else the episode's ``language``)
    the turn must cite a document                   the answer's cite names it (``_meta.expect.turn_cites``;
                                                    without it: a non-empty cite where the reference cites)

An episode passes when all its turns do. ``--regression`` reports every set's pass rate
as a warning, never as a failure (the guide's rule, until the sets have a track record).
Unreadable lines are reported (file:line and why) and skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mypt_lightning.data_prep.jsonl import iter_lines, parse_line
from mypt_lightning.gates.base import Case, CaseResult, explain, rate, subsample
from mypt_lightning.gates.language import same_language
from mypt_lightning.tokens.protocol import EpisodeError
from mypt_lightning.tokens.special_tokens import TOOLCALL_OPEN
from mypt_lightning.tokens.system_prompts import prompts_for_phase

OOD_PHASES = (3, 4, 5, 6)
DEFAULT_OOD_DIR = Path("data") / "eval_ood"
MAX_NEW_TOKENS = 384
_NAME_RE = re.compile(r"^phase(\d)_.*\.jsonl$")


@dataclass
class OODResult:
    file: str
    phase: int
    pass_rate: float | None
    cases: list[CaseResult]
    skipped: list[str] = field(default_factory=list)  # "file:line: why"

    def summary(self) -> str:
        if self.pass_rate is None:
            return f"OOD {Path(self.file).name}: no readable episodes"
        n = sum(c.passed for c in self.cases)
        return f"OOD {Path(self.file).name}: pass rate {self.pass_rate:.2f} ({n}/{len(self.cases)})"

    def to_dict(self) -> dict:
        return {"file": self.file, "phase": self.phase, "pass_rate": self.pass_rate,
                "num_cases": len(self.cases), "num_passed": sum(c.passed for c in self.cases),
                "skipped": self.skipped, "cases": [c.to_dict() for c in self.cases]}


def ood_files(ood_dir: str | Path, up_to_phase: int) -> list[tuple[int, Path]]:
    """(phase, path) of every ``phase{k}_*.jsonl`` in ``ood_dir`` with 3 <= k <= up_to_phase."""
    ood_dir = Path(ood_dir)
    if not ood_dir.is_dir():
        return []
    found = []
    for path in sorted(ood_dir.glob("phase*_*.jsonl")):
        m = _NAME_RE.match(path.name)
        if m and int(m.group(1)) in OOD_PHASES and int(m.group(1)) <= up_to_phase:
            found.append((int(m.group(1)), path))
    return found


def read_episodes(path: Path) -> tuple[list[dict], list[str]]:
    """The episodes of ``path`` and a "file:line: why" for every line skipped (the project's
    one JSONL reader: invalid UTF-8 and hostile JSON are skipped lines, not crashes)."""
    records, skipped = [], []
    for lineno, line in iter_lines(path):
        try:
            record = parse_line(line, f"{path}:{lineno}")
        except EpisodeError as exc:
            skipped.append(str(exc))
            continue
        if record.get("_replay"):
            skipped.append(f"{path}:{lineno}: a replay record has no turns to evaluate")
            continue
        records.append(record)
    return records, skipped


def _turns(messages: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(user message, the reference messages that answer it) per user turn."""
    turns: list[tuple[dict, list[dict]]] = []
    for m in messages:
        if m["role"] == "user":
            turns.append((m, []))
        elif turns:
            turns[-1][1].append(m)
    return turns


def evaluate_file(path: Path, phase: int, policy, workspace, tok, max_cases: int | None = None,
                  protocol=None, batch_size: int | None = 1) -> OODResult:
    """Run every episode of ``path`` (``batch_size`` conversations at once, as Gate.run) in the
    format of ``protocol`` (protocol_profiles; default ours)."""
    from mypt_lightning.gates.batching import resolve_batch_size, run_batched
    from mypt_lightning.tokens.protocol_profiles import get_profile

    profile = get_profile(protocol)
    records, skipped = read_episodes(path)
    items = list(enumerate(subsample(records, max_cases)))
    size = resolve_batch_size(policy, batch_size)
    if size > 1:
        results = run_batched(lambda item, p: _run_record(path, phase, item[0], item[1], p, workspace, tok, profile),
                              items, policy, size)
    else:
        results = [_run_record(path, phase, i, record, policy, workspace, tok, profile) for i, record in items]
    return OODResult(str(path), phase, rate(r.passed for r in results), results, skipped)


def _run_record(path: Path, phase: int, i: int, record: dict, policy, workspace, tok, profile) -> CaseResult:
    """One OOD episode through the agent loop, judged turn by turn."""
    from mypt_lightning.inference.agent import AgentSession

    system = record.get("system") or prompts_for_phase(phase)[0]
    if profile.legacy:  # legacy models know only their own system prompt
        system = profile.default_system()
    tools = workspace if phase >= 5 else None
    session = AgentSession(policy, tools, system, max_steps=5 if phase >= 5 else 1,
                           max_new_tokens=MAX_NEW_TOKENS, tokenizer=tok, profile=profile)
    expect = (record.get("_meta") or {}).get("expect") or {}
    turns = _turns(record["messages"])
    languages = expect.get("turn_languages") or [record.get("language")] * len(turns)
    cites = expect.get("turn_cites") or [None] * len(turns)
    per_turn = []
    for (user, reference), language, cite in zip(turns, languages, cites):
        turn = session.ask(user["content"], user.get("context"))
        per_turn.append(_judge_turn(turn, reference, language, phase, cite))
    first_user = _turns(record["messages"])[0][0]
    prompt_len = len(profile.build_prompt({"system": system, "messages": [first_user]}, tokenizer=tok))
    checks = {f"turn{k + 1}_{name}": ok for k, t in enumerate(per_turn) for name, ok in t["checks"].items()}
    reasons = {f"turn{k + 1}_{name}": why for k, t in enumerate(per_turn) for name, why in t["reasons"].items()}
    case = Case(f"ood-{path.stem}-{i:03d}", f"ood_phase{phase}", record.get("language") or "mixed",
                record["messages"], system)
    return CaseResult(case.id, case.category, case.language, tok.decode(session.tokens[:prompt_len]),
                      tok.decode(session.tokens[prompt_len:]), all(checks.values()), checks,
                      explain(checks, reasons), {"turns": [t["details"] for t in per_turn]})


def _judge_turn(turn, reference: list[dict], language: str | None, phase: int, cite_doc: str | None = None) -> dict:
    """Checks of one turn against its reference messages; ``cite_doc``: the document the
    answer must cite (``_meta.expect.turn_cites``), when the file names one."""
    first = reference[0] if reference else {"role": "assistant"}
    final = next((m for m in reversed(reference) if m["role"] == "assistant"), None)
    called = bool(turn.generations) and TOOLCALL_OPEN in turn.generations[0].tokens
    name = turn.steps[0].name if called and turn.steps else None
    answer = (turn.answer or "").strip()
    checks, reasons = {}, {}
    if first["role"] == "assistant_toolcall":
        checks["tool"] = name == first["name"]
        reasons["tool"] = f"expected a {first['name']} call, got " + (name or ("invalid JSON" if called else "none"))
    elif phase >= 5:
        checks["no_tool"] = not called
        reasons["no_tool"] = "called a tool where the reference answers directly"
    checks["answered"] = turn.completed and bool(answer) and turn.clean_end
    reasons["answered"] = f"no clean final answer ({turn.stop_reason})"
    if language in ("en", "de"):
        checks["language"] = same_language(answer, language)
        reasons["language"] = f"answer is not in {language.upper()}"
    if cite_doc:
        checks["cite"] = cite_doc in (turn.cite or "")
        reasons["cite"] = f"the answer does not cite {cite_doc} (cite {turn.cite!r})"
    elif final is not None and final.get("cite"):
        checks["cite"] = bool((turn.cite or "").strip())
        reasons["cite"] = "the reference cites, the answer does not"
    details = {"answer": turn.answer, "cite": turn.cite, "tools": [s.name for s in turn.steps],
               "stop_reason": turn.stop_reason, "reference": reference}
    return {"checks": checks, "reasons": reasons, "details": details}


__all__ = ["DEFAULT_OOD_DIR", "OODResult", "evaluate_file", "ood_files", "read_episodes"]
