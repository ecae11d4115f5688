"""Phase 5 gate (simple tool calls): the right tool with valid JSON > 90%, NO_TOOL accuracy
> 80%, grounded answers cite.

Each case runs the real agent loop (``agent.AgentSession``, at most 3 model calls) against
the workspace. Categories and what passes::

    search     a question from the workspace question bank     first block calls workspace.search
    get_doc    "show me the full text of <doc_id>"              first block calls workspace.get_doc
    summarize  "summarize the document <doc_id>"                first block calls workspace.summarize
    list       "which <domain> documents are there?"            first block calls workspace.list_docs
    no_tool    a general question (no lookup needed)            a direct answer, no tool call, clean close

For the tool categories the call must parse as JSON with a string "name" equal to the
expected tool (``tool_ok``); search, get_doc and summarize answers must also end with a
``<myPT_cite>`` naming a document a successful tool result returned (``grounded_cite``).

Metrics: tool_correct_valid_json (tool cases), no_tool_accuracy, grounded_cite.
Passes with tool_correct_valid_json > 0.90, no_tool_accuracy > 0.80, grounded_cite >= 0.80.
The user phrasings of the get_doc/summarize/list/no_tool cases are written for the gate.
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
    interleave,
    rate,
    run_agent_case,
)
from mypt_lightning.tokens.special_tokens import TOOLCALL_OPEN
from mypt_lightning.tokens.system_prompts import AGENTIC_STANDARD_PROMPT

SEED = 5505
MAX_STEPS = 3
MAX_NEW_TOKENS = 256
NUM_SEARCH = 12
ASK = {
    "get_doc": {"en": "Show me the full text of {doc_id}.", "de": "Zeig mir den vollständigen Text von {doc_id}."},
    "summarize": {"en": "Could you summarize the document {doc_id} for me?",
                  "de": "Kannst du mir das Dokument {doc_id} zusammenfassen?"},
    "list": {"en": "Which documents about {domain} are in the workspace?",
             "de": "Welche Dokumente zum Bereich {domain} liegen im Workspace?"},
}
DOMAINS = {"en": {"policy": "company policies", "science": "science", "setup": "setting up devices"},
           "de": {"policy": "Richtlinien", "science": "Wissenschaft", "setup": "Einrichtung"}}
NO_TOOL = {
    "en": ["How many hours are in two days?", "What is the capital of Norway?",
           "Translate 'good evening' into German.", "What is 7 times 8?", "Who painted the Mona Lisa?"],
    "de": ["Wie viele Stunden haben zwei Tage?", "Was ist die Hauptstadt von Norwegen?",
           "Übersetze 'Guten Abend' ins Englische.", "Was ist 7 mal 8?", "Wer hat die Mona Lisa gemalt?"],
}
EXPECTED_TOOL = {"search": "workspace.search", "get_doc": "workspace.get_doc", "summarize": "workspace.summarize",
                 "list": "workspace.list_docs"}


def tool_cases(workspace, seed: int = SEED) -> list[Case]:
    from mypt_lightning.generators.qa_bank import facts_by_language, load_facts

    rng = random.Random(seed)
    facts = facts_by_language(load_facts(workspace))
    per_lang: dict[str, list[Case]] = {"en": [], "de": []}
    for lang in ("en", "de"):
        pool = sorted(facts.get(lang, []), key=lambda f: (f.doc_id, f.question))
        for i, fact in enumerate(rng.sample(pool, min(NUM_SEARCH // 2, len(pool)))):
            per_lang[lang].append(Case(f"p5-search-{lang}-{i}", "search", lang,
                                       [{"role": "user", "content": fact.question}], AGENTIC_STANDARD_PROMPT,
                                       {"tool": "workspace.search", "cite": True, "doc_id": fact.doc_id}))
        docs = sorted(d.doc_id for d in workspace.documents if d.language == lang)
        for category in ("get_doc", "summarize"):
            for i, doc_id in enumerate(rng.sample(docs, min(2, len(docs)))):
                per_lang[lang].append(Case(f"p5-{category}-{lang}-{i}", category, lang,
                                           [{"role": "user", "content": ASK[category][lang].format(doc_id=doc_id)}],
                                           AGENTIC_STANDARD_PROMPT,
                                           {"tool": EXPECTED_TOOL[category], "cite": True, "doc_id": doc_id}))
        for i, domain in enumerate(DOMAINS[lang].values()):
            per_lang[lang].append(Case(f"p5-list-{lang}-{i}", "list", lang,
                                       [{"role": "user", "content": ASK["list"][lang].format(domain=domain)}],
                                       AGENTIC_STANDARD_PROMPT, {"tool": "workspace.list_docs", "cite": False}))
        for i, q in enumerate(NO_TOOL[lang]):
            per_lang[lang].append(Case(f"p5-no_tool-{lang}-{i}", "no_tool", lang, [{"role": "user", "content": q}],
                                       AGENTIC_STANDARD_PROMPT, {"tool": None}))
    return interleave(per_lang["en"], per_lang["de"])


class Phase5Gate(Gate):
    phase = 5
    name = "simple_toolcall"
    description = "correct tool with valid JSON > 90%, NO_TOOL accuracy > 80%, grounded answers cite"
    criteria = (
        Criterion("tool_correct_valid_json", ">", 0.90, hint="more tool-call episodes per tool; more steps"),
        Criterion("no_tool_accuracy", ">", 0.80, hint="more NO_TOOL episodes (questions answered without a tool)"),
        Criterion("grounded_cite", ">=", 0.80, hint="more episodes whose answer cites the tool result"),
    )
    needs_workspace = True

    def cases(self, workspace=None) -> list[Case]:
        if workspace is None:
            from mypt_lightning.workspace.store import Workspace

            workspace = Workspace()
        return tool_cases(workspace)

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        return run_agent_case(case, ctx, judge, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW_TOKENS)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        out["tool_correct_valid_json"] = rate(r.checks["tool_ok"] for r in results if r.category != "no_tool") or 0.0
        out["no_tool_accuracy"] = rate(r.passed for r in results if r.category == "no_tool") or 0.0
        out["grounded_cite"] = rate(r.checks["grounded_cite"] for r in results if "grounded_cite" in r.checks) or 0.0
        return out


def first_call(turn) -> tuple[bool, str | None]:
    """(the first model block contained <myPT_toolcall>, the tool name when its JSON was valid)."""
    if not turn.generations:
        return False, None
    called = TOOLCALL_OPEN in turn.generations[0].tokens
    name = turn.steps[0].name if called and turn.steps else None
    return called, name


def judge(case: Case, turn, prompt_text: str, output_text: str, tok) -> CaseResult:
    """Verdict on one agent turn; ``output_text``: the transcript after the prompt (the
    model's blocks with the injected tool results)."""
    called, name = first_call(turn)
    expected = case.expect.get("tool")
    if expected is None:
        checks = {"no_tool": not called, "answered": turn.completed and bool((turn.answer or "").strip()),
                  "clean": turn.clean_end}
        reasons = {"no_tool": f"called {name or 'a tool'} for a question that needs none",
                   "answered": f"no final answer ({turn.stop_reason})",
                   "clean": "did not end with </myPT_assistant><myPT_eot>"}
    else:
        checks = {"tool_ok": called and name == expected}
        reasons = {"tool_ok": (f"expected {expected}, got " + ("no tool call" if not called else
                               "invalid JSON" if name is None else name))}
        if case.expect.get("cite"):
            checks["grounded_cite"] = turn.completed and cites_a_result(turn.cite, turn.steps)
            reasons["grounded_cite"] = (f"final answer cites {turn.cite!r}, not a document from the tool results"
                                        if turn.completed else f"no final answer ({turn.stop_reason})")
    return agent_case_result(case, prompt_text, output_text, turn, checks, reasons, tok)


GATE = Phase5Gate()
