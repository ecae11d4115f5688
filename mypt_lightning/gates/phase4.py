"""Phase 4 gate (multi-turn): topic and language kept across 3 turns, clean turn boundaries.

Each case is a 3-turn conversation about one workspace document: turn 1 gives the
document as <myPT_user_context> and asks a question from the question bank, turns 2
and 3 ask follow-ups about the same document (with a gate-written lead-in such as
"One more thing: ..."), without repeating the context. The model's answers are fed back,
so every turn sees the real history. Per turn::

    clean     the turn ended with exactly </myPT_assistant><myPT_eot>, no other tags leaked
    language  the answer is in the conversation's language
    topic     at least 30% of the answer's content words occur in the document

A conversation passes when all its turns do. Passes with pass_rate >= 0.80 and
clean_boundaries (over all turns) >= 0.90.
"""

from __future__ import annotations

import random

from mypt_lightning.gates.base import (
    Case,
    CaseResult,
    Criterion,
    Gate,
    GateContext,
    content_overlap,
    explain,
    interleave,
    rate,
)
from mypt_lightning.gates.language import same_language
from mypt_lightning.tokens.system_prompts import CHAT_SYSTEM_PROMPT

TURNS = 3
NUM_CONVERSATIONS = 8
SEED = 4404
MAX_NEW_TOKENS = 256
TOPIC_OVERLAP = 0.3
FOLLOW_UPS = {"en": ["One more thing: {q}", "And another question about this: {q}"],
              "de": ["Noch etwas: {q}", "Und noch eine Frage dazu: {q}"]}


class Phase4Gate(Gate):
    phase = 4
    name = "multiturn"
    description = "topic and language kept across 3+ turns, clean </myPT_assistant><myPT_eot> turn boundaries"
    criteria = (
        Criterion("pass_rate", ">=", 0.80, hint="more multi-turn episodes (3+ turns), both languages; more steps"),
        Criterion("clean_boundaries", ">=", 0.90, hint="more phase-1 replay; check the turn masks of the multi-turn data"),
    )
    needs_workspace = True

    def cases(self, workspace=None) -> list[Case]:
        from mypt_lightning.generators.qa_bank import facts_by_doc, format_context, load_facts

        if workspace is None:
            from mypt_lightning.workspace.store import Workspace

            workspace = Workspace()
        rng = random.Random(SEED)
        docs = {d.doc_id: d for d in workspace.documents}
        by_doc = {k: sorted(v, key=lambda f: f.question) for k, v in facts_by_doc(load_facts(workspace)).items()
                  if len(v) >= TURNS}
        per_lang: dict[str, list[Case]] = {}
        for lang in ("en", "de"):
            candidates = sorted(k for k in by_doc if docs[k].language == lang)
            for doc_id in rng.sample(candidates, min(NUM_CONVERSATIONS // 2, len(candidates))):
                doc, facts = docs[doc_id], rng.sample(by_doc[doc_id], TURNS)
                messages = [{"role": "user", "content": facts[0].question,
                             "context": format_context(doc, doc.text)}]
                for k, fact in enumerate(facts[1:]):
                    messages.append({"role": "user", "content": FOLLOW_UPS[lang][k % 2].format(q=fact.question)})
                per_lang.setdefault(lang, []).append(
                    Case(f"p4-{lang}-{doc_id}", "conversation", lang, messages, CHAT_SYSTEM_PROMPT,
                         {"doc_id": doc_id, "doc_text": doc.title + "\n" + doc.text}))
        return interleave(per_lang.get("en", []), per_lang.get("de", []))

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        from mypt_lightning.inference.agent import AgentSession

        session = AgentSession(ctx.policy, None, ctx.system(case.system), max_steps=1, max_new_tokens=MAX_NEW_TOKENS,
                               tokenizer=ctx.tok, profile=ctx.profile)
        turns = []
        for msg in case.messages:
            turn = session.ask(msg["content"], msg.get("context"))
            turns.append(turn)
        return judge(case, turns, ctx.render(session.tokens), ctx.tok)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        turn_checks = [t for r in results for t in r.details["turns"]]
        for key, name in (("clean", "clean_boundaries"), ("language", "language_kept"), ("topic", "topic_kept")):
            out[name] = rate(t["checks"][key] for t in turn_checks) or 0.0
        return out


def judge(case: Case, turns: list, transcript: str, tok) -> CaseResult:
    """``turns``: the TurnResult of each user message, in order."""
    per_turn = []
    for i, turn in enumerate(turns):
        answer = (turn.answer or "").strip()
        checks = {"clean": turn.completed and turn.clean_end,
                  "language": bool(answer) and same_language(answer, case.language),
                  "topic": content_overlap(answer, [case.expect["doc_text"]]) >= TOPIC_OVERLAP}
        per_turn.append({"turn": i + 1, "answer": answer, "output": turn.final_text, "checks": checks,
                         "stop_reason": turn.stop_reason})
    checks = {key: all(t["checks"][key] for t in per_turn) for key in ("clean", "language", "topic")}
    checks["turns"] = len(turns) >= TURNS
    bad = {key: ", ".join(str(t["turn"]) for t in per_turn if not t["checks"][key]) for key in ("clean", "language", "topic")}
    reasons = {"clean": f"unclean turn boundary in turn(s) {bad['clean']}",
               "language": f"language not kept in turn(s) {bad['language']}",
               "topic": f"off topic in turn(s) {bad['topic']}", "turns": f"only {len(turns)} turns"}
    output = "\n".join(f"[turn {t['turn']}] {t['output']}" for t in per_turn)
    return CaseResult(case.id, case.category, case.language, transcript, output, all(checks.values()), checks,
                      explain(checks, reasons), {"turns": per_turn, "doc_id": case.expect["doc_id"]})


GATE = Phase4Gate()
