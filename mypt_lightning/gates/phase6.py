"""Phase 6 gate (agentic RAG): multi-step tool chains that finish, grounded, reasoned, cited.

Cases run the real agent loop (at most 5 model calls) against the workspace:

    lookup        a question from the question bank (search -> [get_doc] -> answer)
    list_summary  "list the <domain> documents, then summarize <title>" (list_docs -> summarize -> answer)

Per case::

    completed   a final answer closed with </myPT_assistant><myPT_eot>, no repeated identical
                call, no max_steps/loop stop; lookup used >= 1 tool, list_summary >= 2
    grounded    >= 50% of the answer's content words occur in successful tool results
    think       every tool-calling block starts with a <myPT_think> (reasoning before the choice)
    cite        the answer's <myPT_cite> names a document a successful tool result returned

Metrics completion, grounded, think_before_tools, cite (rates over all cases). Passes with
each >= 0.80. The list_summary phrasing is written for the gate.
"""

from __future__ import annotations

import random

from mypt_lightning.gates.base import (
    Case,
    CaseResult,
    Criterion,
    Gate,
    GateContext,
    agent_case_result,
    cites_a_result,
    content_overlap,
    interleave,
    rate,
    result_strings,
    run_agent_case,
    successful_results,
)
from mypt_lightning.tokens.system_prompts import AGENTIC_STANDARD_PROMPT

SEED = 6606
MAX_STEPS = 5
MAX_NEW_TOKENS = 384
NUM_LOOKUP = 8
GROUNDED_OVERLAP = 0.5
LIST_SUMMARY = {"en": "First show me which {domain} documents exist, then give me a short summary of \"{title}\".",
                "de": "Zeig mir zuerst, welche Dokumente es zum Bereich {domain} gibt, und fasse dann „{title}“ kurz zusammen."}
DOMAIN_WORDS = {"en": {"policy": "policy", "science": "science", "setup": "setup", "product": "product",
                       "history": "history"},
                "de": {"policy": "Richtlinien", "science": "Wissenschaft", "setup": "Einrichtung",
                       "product": "Produkte", "history": "Geschichte"}}


class Phase6Gate(Gate):
    phase = 6
    name = "agentic_rag"
    description = ("2-3 step tool chains complete without loops, final answer grounded in tool results, "
                   "think before tool choices, cite present")
    criteria = (
        Criterion("completion", ">=", 0.80, hint="more 2-3 step agent episodes that finish; more steps"),
        Criterion("grounded", ">=", 0.80, hint="more episodes whose answer uses the tool results"),
        Criterion("think_before_tools", ">=", 0.80, hint="more episodes with a think step before each tool call"),
        Criterion("cite", ">=", 0.80, hint="more agent episodes that cite their sources"),
    )
    needs_workspace = True

    def cases(self, workspace=None) -> list[Case]:
        from mypt_lightning.generators.qa_bank import facts_by_language, load_facts

        if workspace is None:
            from mypt_lightning.workspace.store import Workspace

            workspace = Workspace()
        rng = random.Random(SEED)
        facts = facts_by_language(load_facts(workspace))
        per_lang: dict[str, list[Case]] = {"en": [], "de": []}
        for lang in ("en", "de"):
            pool = sorted(facts.get(lang, []), key=lambda f: (f.doc_id, f.question))
            for i, fact in enumerate(rng.sample(pool, min(NUM_LOOKUP // 2, len(pool)))):
                per_lang[lang].append(Case(f"p6-lookup-{lang}-{i}", "lookup", lang,
                                           [{"role": "user", "content": fact.question}], AGENTIC_STANDARD_PROMPT,
                                           {"min_tools": 1, "doc_id": fact.doc_id}))
            docs = sorted((d for d in workspace.documents if d.language == lang), key=lambda d: d.doc_id)
            for i, doc in enumerate(rng.sample(docs, min(2, len(docs)))):
                domain = DOMAIN_WORDS[lang].get(doc.domain, doc.domain)
                per_lang[lang].append(Case(f"p6-list_summary-{lang}-{i}", "list_summary", lang,
                                           [{"role": "user", "content": LIST_SUMMARY[lang].format(domain=domain,
                                                                                                   title=doc.title)}],
                                           AGENTIC_STANDARD_PROMPT, {"min_tools": 2, "doc_id": doc.doc_id}))
        return interleave(per_lang["en"], per_lang["de"])

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        return run_agent_case(case, ctx, judge, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW_TOKENS)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        for check, name in (("completed", "completion"), ("grounded", "grounded"), ("think", "think_before_tools"),
                            ("cite", "cite")):
            out[name] = rate(r.checks[check] for r in results) or 0.0
        return out


def judge(case: Case, turn, prompt_text: str, output_text: str, tok) -> CaseResult:
    repeated = [s for s in turn.steps if s.error == "repeated_call"]
    good = successful_results(turn.steps)
    answer = (turn.answer or "").strip()
    min_tools = case.expect.get("min_tools", 1)
    checks = {
        "completed": turn.completed and turn.clean_end and not repeated and len(good) >= min_tools,
        "grounded": bool(answer) and content_overlap(answer, [s for r in good for s in result_strings(r)])
        >= GROUNDED_OVERLAP,
        "think": bool(turn.steps) and all((s.think or "").strip() for s in turn.steps),
        "cite": turn.completed and cites_a_result(turn.cite, turn.steps),
    }
    reasons = {
        "completed": (f"stop {turn.stop_reason}, {len(good)} successful tool call(s) (need {min_tools}), "
                      f"{len(repeated)} repeated, clean end {turn.clean_end}"),
        "grounded": "the answer is not supported by the tool results",
        "think": "a tool call without a <myPT_think> before it" if turn.steps else "no tool calls",
        "cite": f"cite {turn.cite!r} names no document from the tool results",
    }
    return agent_case_result(case, prompt_text, output_text, turn, checks, reasons, tok)


GATE = Phase6Gate()
