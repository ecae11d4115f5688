"""What every gate is made of: cases, per-case verdicts, criteria on pass rates, results.

A gate (one module per phase) lists its :class:`Case` s, runs each against a *policy*
(``generation.ModelPolicy`` for a model, ``TextPolicy`` for crafted outputs in tests),
judges the output with named checks, and turns the verdicts into metrics (rates in
[0, 1]). It passes when every :class:`Criterion` holds::

    cases ──run_case──> CaseResult(checks={"closed": True, ...}, passed)
          ──metrics───> {"pass_rate": 0.93, "pass_rate_de": 0.9, ...}
          ──criteria──> pass_rate >= 0.90 ✓, pass_rate_de >= 0.80 ✓  => GateResult.passed

Everything is deterministic: greedy decoding, fixed case lists, fixed seeds.
"""

from __future__ import annotations

import operator
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, Sequence

from mypt_lightning.workspace.store import result_strings
from mypt_lightning.workspace.analysis import content_words

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class Criterion:
    """``metric op value``, e.g. Criterion("exact_match", ">", 0.80). ``hint``: what usually
    fixes it when it fails (shown by the end-of-run summary; not part of the verdict)."""

    metric: str
    op: str
    value: float
    hint: str = ""

    def check(self, metrics: dict[str, float]) -> bool:
        actual = metrics.get(self.metric)
        return actual is not None and _OPS[self.op](actual, self.value)

    def describe(self, metrics: dict[str, float]) -> str:
        actual = metrics.get(self.metric)
        shown = "n/a" if actual is None else f"{actual:.3f}"
        return f"{self.metric} {shown} {self.op} {self.value:.2f}: {'ok' if self.check(metrics) else 'FAILED'}"


@dataclass
class Case:
    """One gate prompt. ``messages``: the user turn(s) (a multi-turn case lists every user
    message; the gate generates the assistant turns); ``expect``: what the judge needs."""

    id: str
    category: str
    language: str
    messages: list[dict]
    system: str | None = None
    expect: dict = field(default_factory=dict)


@dataclass
class CaseResult:
    id: str
    category: str
    language: str
    prompt: str  # the prompt as text (tags as strings)
    output: str  # what the model generated (tags as strings); multi-turn: every turn
    passed: bool
    checks: dict[str, bool]
    reason: str = ""  # the failed checks, explained
    details: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verdict"] = self.verdict
        return d


@dataclass
class GateResult:
    phase: int
    name: str
    description: str
    passed: bool
    metrics: dict[str, float]
    criteria: list[dict]
    cases: list[CaseResult]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_criteria(self) -> list[str]:
        return [c["text"] for c in self.criteria if not c["ok"]]

    def summary(self) -> str:
        head = f"phase {self.phase} gate ({self.name}): {'PASS' if self.passed else 'FAIL'}"
        return "\n".join([head] + [f"  {c['text']}" for c in self.criteria])

    def to_dict(self) -> dict:
        return {
            "phase": self.phase, "name": self.name, "description": self.description,
            "passed": self.passed, "metrics": self.metrics, "criteria": self.criteria,
            "num_cases": len(self.cases), "num_passed": sum(c.passed for c in self.cases),
            "seconds": round(self.seconds, 2), "warnings": self.warnings,
            "cases": [c.to_dict() for c in self.cases],
        }


def rate(values: Iterable[bool]) -> float | None:
    values = list(values)
    return sum(bool(v) for v in values) / len(values) if values else None


def subsample(cases: Sequence[Case], max_cases: int | None) -> list[Case]:
    """At most ``max_cases`` cases, evenly spread over the list (keeps categories and languages mixed)."""
    cases = list(cases)
    if not max_cases or max_cases >= len(cases):
        return cases
    step = len(cases) / max_cases
    return [cases[int(i * step)] for i in range(max_cases)]


class Gate:
    """Base class. Subclasses set ``phase``, ``name``, ``description``, ``criteria`` and
    implement ``cases()`` and ``run_case()``; ``metrics()`` defaults to the overall pass
    rate plus one rate per category and per language."""

    phase: int = 0
    name: str = ""
    description: str = ""
    criteria: tuple[Criterion, ...] = ()
    needs_workspace: bool = False

    def cases(self, workspace=None) -> list[Case]:
        """The gate's cases; phases 3-6 build theirs from ``workspace`` (default: the bundled one)."""
        raise NotImplementedError

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        raise NotImplementedError

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = {"pass_rate": rate(r.passed for r in results)}
        for key in sorted({r.category for r in results}):
            out[f"pass_rate_{key}"] = rate(r.passed for r in results if r.category == key)
        for lang in sorted({r.language for r in results}):
            out[f"pass_rate_{lang}"] = rate(r.passed for r in results if r.language == lang)
        return {k: v for k, v in out.items() if v is not None}

    def run(self, policy, *, workspace=None, max_cases: int | None = None, tokenizer=None,
            progress: Callable[[CaseResult], None] | None = None, protocol=None,
            batch_size: int | None = None) -> GateResult:
        """Run the gate. ``batch_size``: cases in flight at once, their model calls decoded
        together (gates/batching.py); None = the device's default for a model policy, 1 =
        one case after the other. The result does not depend on it (greedy decoding)."""
        from mypt_lightning.gates.batching import resolve_batch_size, run_batched

        start = time.perf_counter()
        if self.needs_workspace and workspace is None:
            from mypt_lightning.workspace.store import Workspace

            workspace = Workspace()
        ctx = GateContext(policy, workspace, _tokenizer(tokenizer), protocol)
        all_cases = self.cases(workspace)
        chosen = subsample(all_cases, max_cases)
        batch_size = resolve_batch_size(policy, batch_size)
        if batch_size > 1:
            results = run_batched(lambda case, p: self.run_case(case, replace(ctx, policy=p)), chosen, policy,
                                  batch_size, progress)
        else:
            results = []
            for case in chosen:
                result = self.run_case(case, ctx)
                results.append(result)
                if progress is not None:
                    progress(result)
        metrics = self.metrics(results)
        partial = len(results) < len(all_cases)
        criteria = []
        for c in self.criteria:
            entry = {"metric": c.metric, "op": c.op, "value": c.value, "actual": metrics.get(c.metric),
                     "ok": c.check(metrics), "text": c.describe(metrics), "hint": c.hint}
            if partial and c.metric not in metrics:  # a --max_cases subset without cases of that kind
                entry.update(ok=True, skipped=True, text=f"{c.metric}: not measured on this subset of "
                                                         f"{len(results)} cases (skipped)")
            criteria.append(entry)
        return GateResult(self.phase, self.name, self.description, all(c["ok"] for c in criteria), metrics,
                          criteria, results, seconds=time.perf_counter() - start)


@dataclass
class GateContext:
    """What a case needs to run: the policy, the workspace (phases 5-6), the tokenizer, and
    the protocol profile the model was trained on (protocol_profiles; None: ours)."""

    policy: object
    workspace: object
    tok: object
    profile: object = None

    def __post_init__(self) -> None:
        from mypt_lightning.tokens.protocol_profiles import get_profile

        self.profile = get_profile(self.profile)

    def system(self, case_system: str | None) -> str | None:
        """The case's system prompt, or under a legacy profile the one those models were trained with."""
        return self.profile.default_system() if self.profile.legacy else case_system

    def prompt(self, case) -> list[int]:
        return self.profile.build_prompt({"system": self.system(case.system), "messages": case.messages},
                                         tokenizer=self.tok)

    def render(self, ids) -> str:
        return self.tok.decode(ids)


def _tokenizer(tokenizer):
    if tokenizer is not None:
        return tokenizer
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    return get_tokenizer()


# ============================================================================ shared checks


def closes_cleanly(tokens: Sequence[int], profile=None) -> bool:
    """The generation ended the way ``profile`` (protocol_profiles; None: ours) closes an answer:
    ``</myPT_assistant><myPT_eot>``; mypt_tool ``</myPT_assistant>\\n<myPT_eot>``; legacy
    profiles also a stop at ``</myPT_assistant>`` (Profile.clean_closes)."""
    from mypt_lightning.tokens.protocol_profiles import get_profile

    return get_profile(profile).clean_end(tokens)


def close_text(profile=None) -> str:
    """What a clean close is under ``profile``, for a failed check's reason."""
    from mypt_lightning.tokens.protocol_profiles import get_profile

    return get_profile(profile).clean_close_text


def normalize(text: str) -> str:
    """Lower-case, whitespace collapsed, surrounding quotes and final punctuation dropped."""
    text = " ".join(text.split()).strip()
    text = text.strip("\"'“”„‚‘’«»`")
    return text.rstrip(".!?").strip().lower()


def content_overlap(text: str, sources: Iterable[str]) -> float:
    """Share of the content words (stemmed) of ``text`` that occur in ``sources`` (0 if none)."""
    words = set(content_words(text))
    if not words:
        return 0.0
    pool: set[str] = set()
    for s in sources:
        pool.update(content_words(s))
    return len(words & pool) / len(words)


def successful_results(steps) -> list[dict]:
    """The results of the tool steps that did not fail."""
    return [s.result for s in steps if s.error is None and isinstance(s.result, dict)]


def cites_a_result(cite: str | None, steps) -> bool:
    """The citation names a doc id (or title) that a successful tool result returned."""
    cite = (cite or "").strip()
    if not cite:
        return False
    names = set()
    for result in successful_results(steps):
        for node in [result, *result.get("documents", [])] if isinstance(result.get("documents"), list) else [result]:
            if isinstance(node, dict):
                names.update(str(node[k]) for k in ("doc_id", "title") if node.get(k))
    return any(name in cite for name in names)


def interleave(*lists: Sequence) -> list:
    """[a0, b0, a1, b1, ...] (lists of unequal length: the rest in order)."""
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def explain(checks: dict[str, bool], reasons: dict[str, str]) -> str:
    """The failed checks with their explanations, '; '-joined ('' when all passed)."""
    return "; ".join(f"{name}: {reasons.get(name, 'failed')}" for name, ok in checks.items() if not ok)


def run_agent_case(case, ctx, judge, *, max_steps: int, max_new_tokens: int):
    """Run ``case``'s first user message through the real agent loop and ``judge`` the turn
    (phases 5 and 6). The judge gets the rendered prompt and everything the agent added."""
    from mypt_lightning.inference.agent import AgentSession

    system = ctx.system(case.system)
    session = AgentSession(ctx.policy, ctx.workspace, system, max_steps=max_steps,
                           max_new_tokens=max_new_tokens, tokenizer=ctx.tok, profile=ctx.profile)
    msg = case.messages[0]
    turn = session.ask(msg["content"], msg.get("context"))
    prompt_len = len(ctx.profile.build_prompt({"system": system, "messages": [msg]}, tokenizer=ctx.tok))
    return judge(case, turn, ctx.render(session.tokens[:prompt_len]), ctx.render(session.tokens[prompt_len:]),
                 ctx.tok)


def run_single_turn_case(case, ctx, judge, *, max_new_tokens: int):
    """Generate one answer to ``case``'s prompt and ``judge`` its tokens (phases 2 and 3)."""
    prompt = ctx.prompt(case)
    gen = ctx.policy(prompt, max_new_tokens=max_new_tokens)
    return judge(case, gen.tokens, ctx.render(prompt), ctx.tok, profile=ctx.profile)


def agent_case_result(case, prompt_text: str, output_text: str, turn, checks: dict[str, bool],
                      reasons: dict[str, str], tok) -> CaseResult:
    """The CaseResult of an agent turn (phases 5 and 6): passed when every check holds; the
    details keep the answer, the cite, every tool step and the raw generations."""
    steps = [{"name": s.name, "arguments": s.arguments, "think": s.think, "error": s.error, "result": s.result}
             for s in turn.steps]
    return CaseResult(case.id, case.category, case.language, prompt_text, output_text, all(checks.values()), checks,
                      explain(checks, reasons), {"answer": turn.answer, "cite": turn.cite, "steps": steps,
                                                 "stop_reason": turn.stop_reason, "fallback": turn.fallback,
                                                 "generations": [g.text(tok) for g in turn.generations]})


__all__ = ["Case", "CaseResult", "Criterion", "Gate", "GateContext", "GateResult", "agent_case_result",
           "close_text", "closes_cleanly", "cites_a_result", "content_overlap", "explain", "interleave", "normalize", "rate",
           "result_strings", "run_agent_case", "run_single_turn_case", "subsample", "successful_results"]
