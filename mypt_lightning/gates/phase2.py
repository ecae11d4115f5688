"""Phase 2 gate (operators): COPY / WRAP / EXTRACT exact match on unseen payloads > 80%.

The cases are the operator generator's *validation* split (``generators.operators``):
its payloads fall in a hash bucket the training split never uses, and its instruction
templates and EXTRACT carrier sentences are the held-out fifth. So every case is an
unseen payload in an unseen phrasing. A case passes when the answer, with surrounding
whitespace removed, equals the expected string exactly (case and punctuation count).
"""

from __future__ import annotations

from mypt_lightning.gates.base import (
    Case,
    CaseResult,
    Criterion,
    Gate,
    GateContext,
    closes_cleanly,
    explain,
    rate,
    run_single_turn_case,
)
from mypt_lightning.tokens.protocol import parse_assistant_output

NUM_CASES = 60
SEED = 20250  # fixed: the gate's case list never changes between runs
MAX_NEW_TOKENS = 96


class Phase2Gate(Gate):
    phase = 2
    name = "operators"
    description = "operator (COPY/WRAP/EXTRACT) exact match on unseen payloads and phrasings > 80%"
    criteria = (
        Criterion("exact_match", ">", 0.80, hint="more steps; more operator examples (tools/generate_operator_dataset.py); keep phase-1 replay in the mix"),
    )

    def cases(self, workspace=None) -> list[Case]:
        from mypt_lightning.generators import operators

        records = operators.generate(1, SEED, "mixed", val_examples=NUM_CASES).val.records
        out = []
        for i, r in enumerate(records):
            user = [m for m in r["messages"] if m["role"] == "user"]
            answer = next(m["content"] for m in r["messages"] if m["role"] == "assistant")
            meta = r.get("_meta", {})
            out.append(Case(f"p2-{i:03d}", meta.get("operator", "operator"), r.get("language", "en"), user[:1],
                            r.get("system"), {"answer": answer, "payload": meta.get("payload"),
                                              "template": meta.get("template")}))
        return out

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        return run_single_turn_case(case, ctx, judge, max_new_tokens=MAX_NEW_TOKENS)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        out["exact_match"] = out.get("pass_rate", 0.0)
        out["closed_cleanly"] = rate(r.checks["closed"] for r in results) or 0.0
        return out


def judge(case: Case, tokens: list[int], prompt_text: str, tok, *, profile=None) -> CaseResult:
    parsed = parse_assistant_output(tokens, tokenizer=tok)
    expected = case.expect["answer"]
    got = parsed.answer.strip()
    exact = got == expected.strip()
    checks = {"exact_match": exact}
    reasons = {"exact_match": f"expected {expected!r}, got {got!r}"}
    result = CaseResult(case.id, case.category, case.language, prompt_text, tok.decode(tokens), exact,
                        checks, explain(checks, reasons),
                        # the case's own fields first: its "answer" is the expected one, not the model's
                        {**case.expect, "expected": expected, "answer": got})
    result.checks["closed"] = closes_cleanly(tokens, profile)  # reported, not part of the verdict
    return result


GATE = Phase2Gate()
