"""Phase 3 gate (chat SFT): format, echo, anti-echo, the user's language, citations with context.

Categories (every case also needs a clean ``</myPT_assistant><myPT_eot>`` close)::

    format     open questions: a non-empty answer, closed cleanly
    echo       "say back exactly ...": the payload appears verbatim in the answer
    anti_echo  a payload to reason ABOUT (count, translate, classify): the answer must not copy it
    cite       a question with <myPT_user_context> from a workspace document: a non-empty
               <myPT_cite> naming that document (its doc id, or a span of the context)

``language`` (a metric over format and cite cases): the answer is in the user's language.
Passes with format >= 0.90 and echo, anti_echo, cite and language >= 0.80.

format/echo/anti_echo prompts and payloads are written for the gate (phrasings the echo
and chat generators do not use); cite cases are questions from the workspace question
bank with a passage of their document as context, as the model sees them in training.
"""

from __future__ import annotations

import random

from mypt_lightning.gates.base import (
    Case,
    CaseResult,
    Criterion,
    Gate,
    GateContext,
    close_text,
    closes_cleanly,
    explain,
    normalize,
    rate,
    run_single_turn_case,
)
from mypt_lightning.gates.language import same_language
from mypt_lightning.tokens.protocol import parse_assistant_output
from mypt_lightning.tokens.special_tokens import SYSTEM_OPEN, USER_OPEN
from mypt_lightning.tokens.system_prompts import CHAT_SYSTEM_PROMPT

MAX_NEW_TOKENS = 256
SEED = 3303
NUM_CITE = 10

FORMAT = {
    "en": ["What is a good way to start the day?", "Explain in one sentence what a computer does.",
           "Why do leaves change colour in autumn?", "What is the difference between weather and climate?",
           "Give me one tip for learning a new language."],
    "de": ["Was ist ein guter Start in den Tag?", "Erkläre in einem Satz, was ein Computer macht.",
           "Warum verfärben sich die Blätter im Herbst?", "Was ist der Unterschied zwischen Wetter und Klima?",
           "Gib mir einen Tipp, wie man eine neue Sprache lernt."],
}
ECHO = {
    "en": [("Please say back exactly these words: {p}", "blue lanterns at midnight"),
           ("Return my words unchanged: {p}", "Invoice 4471-B is overdue"),
           ("Echo the following line word for word: {p}", "Martha plants seven tulips"),
           ("Say this back to me exactly: {p}", "zebra crossing ahead")],
    "de": [("Gib bitte genau diese Worte wieder: {p}", "Der Kaffee ist kalt geworden"),
           ("Wiederhole meine Worte unverändert: {p}", "Rechnung 4471-B ist überfällig"),
           ("Sprich mir diese Zeile Wort für Wort nach: {p}", "Martha pflanzt sieben Tulpen"),
           ("Sag mir das exakt so zurück: {p}", "Achtung Zebrastreifen")],
}
ANTI_ECHO = {  # (prompt, the payload that must not be copied, check the answer's language)
    "en": [("How many words does this sentence have: 'The red fox runs fast'?", "The red fox runs fast", True),
           ("Translate into German: 'Good night, my friend.'", "Good night, my friend", False),
           ("What is the last word of 'Cats sleep all afternoon'?", "Cats sleep all afternoon", True),
           ("Is this a question or a statement: 'The bus is late.'", "The bus is late", True)],
    "de": [("Wie viele Wörter hat dieser Satz: 'Der rote Fuchs läuft schnell'?", "Der rote Fuchs läuft schnell", True),
           ("Übersetze ins Englische: 'Gute Nacht, mein Freund.'", "Gute Nacht, mein Freund", False),
           ("Was ist das letzte Wort von 'Katzen schlafen den ganzen Nachmittag'?",
            "Katzen schlafen den ganzen Nachmittag", True),
           ("Ist das eine Frage oder eine Aussage: 'Der Bus ist spät.'", "Der Bus ist spät", True)],
}


def cite_cases(workspace, n: int = NUM_CITE, seed: int = SEED, prefix: str = "p3") -> list[Case]:
    """Questions from the workspace question bank with a passage of their document as
    <myPT_user_context>, half EN, half DE (deterministic)."""
    from mypt_lightning.generators.qa_bank import facts_by_language, format_context, load_facts, passage

    rng = random.Random(seed)
    by_lang = facts_by_language(load_facts(workspace))
    docs = {d.doc_id: d for d in workspace.documents}
    out = []
    for i in range(n):
        lang = ("en", "de")[i % 2]
        pool = sorted(by_lang.get(lang, []), key=lambda f: (f.doc_id, f.question))
        if not pool:
            continue
        fact = pool[rng.randrange(len(pool))]
        doc = docs[fact.doc_id]
        context = format_context(doc, passage(doc, fact.evidence, rng))
        out.append(Case(f"{prefix}-cite-{lang}-{i:02d}", "cite", lang,
                        [{"role": "user", "content": fact.question, "context": context}], CHAT_SYSTEM_PROMPT,
                        {"doc_id": fact.doc_id, "title": doc.title, "context": context, "check_language": True}))
    return out


class Phase3Gate(Gate):
    phase = 3
    name = "chat"
    description = "format, echo, anti-echo, answers in the user's language, cites when context is given"
    criteria = (
        Criterion("pass_rate_format", ">=", 0.90, hint="more phase-1 replay in the mix; more steps"),
        Criterion("pass_rate_echo", ">=", 0.80, hint="more echo examples in the chat mix"),
        Criterion("pass_rate_anti_echo", ">=", 0.80, hint="more anti-echo examples (questions that must not be repeated back)"),
        Criterion("pass_rate_cite", ">=", 0.80, hint="more context-with-citation examples (RAG chat data)"),
        Criterion("language", ">=", 0.80, hint="more data in the weaker language (often German); bilingual pairs"),
    )
    needs_workspace = True

    def cases(self, workspace=None) -> list[Case]:
        out = []
        for lang in ("en", "de"):
            for i, q in enumerate(FORMAT[lang]):
                out.append(Case(f"p3-format-{lang}-{i}", "format", lang, [{"role": "user", "content": q}],
                                CHAT_SYSTEM_PROMPT, {"check_language": True}))
            for i, (tpl, payload) in enumerate(ECHO[lang]):
                out.append(Case(f"p3-echo-{lang}-{i}", "echo", lang,
                                [{"role": "user", "content": tpl.format(p=payload)}], CHAT_SYSTEM_PROMPT,
                                {"contains": payload}))
            for i, (q, payload, check_lang) in enumerate(ANTI_ECHO[lang]):
                out.append(Case(f"p3-anti_echo-{lang}-{i}", "anti_echo", lang, [{"role": "user", "content": q}],
                                CHAT_SYSTEM_PROMPT, {"not_contains": payload, "check_language": check_lang}))
        if workspace is None:
            from mypt_lightning.workspace.store import Workspace

            workspace = Workspace()
        return out + cite_cases(workspace)

    def run_case(self, case: Case, ctx: GateContext) -> CaseResult:
        return run_single_turn_case(case, ctx, judge, max_new_tokens=MAX_NEW_TOKENS)

    def metrics(self, results: list[CaseResult]) -> dict[str, float]:
        out = super().metrics(results)
        lang = rate(r.checks["language"] for r in results if "language" in r.checks)
        if lang is not None:
            out["language"] = lang
        return out


def judge(case: Case, tokens: list[int], prompt_text: str, tok, *, profile=None) -> CaseResult:
    """Verdict on one single-turn chat answer (shared with the OOD sets)."""
    parsed = parse_assistant_output(tokens, tokenizer=tok)
    answer = parsed.answer.strip()
    checks = {"answered": bool(answer),
              "closed": closes_cleanly(tokens, profile) and not {USER_OPEN, SYSTEM_OPEN} & set(tokens)}
    reasons = {"answered": "empty answer", "closed": f"did not end cleanly with {close_text(profile)}"}
    expect = case.expect
    if "contains" in expect:
        checks["echo"] = normalize(expect["contains"]) in normalize(answer)
        reasons["echo"] = f"answer does not contain {expect['contains']!r}"
    if "not_contains" in expect:
        checks["no_copy"] = normalize(expect["not_contains"]) not in normalize(answer)
        reasons["no_copy"] = "answer copies the payload instead of answering"
    if expect.get("check_language"):
        checks["language"] = same_language(answer, case.language)
        reasons["language"] = f"answer is not in {case.language.upper()}"
    if "doc_id" in expect:
        cite = (parsed.cite or "").strip()
        checks["cite"] = bool(cite) and (expect["doc_id"] in cite or expect.get("title", "\0") in cite
                                         or normalize(cite) in normalize(expect.get("context", "")))
        reasons["cite"] = f"no <myPT_cite> naming {expect['doc_id']} (got {cite!r})"
    return CaseResult(case.id, case.category, case.language, prompt_text, tok.decode(tokens), all(checks.values()),
                      checks, explain(checks, reasons), {"answer": answer, "cite": parsed.cite, "think": parsed.think,
                                                         "num_tokens": len(tokens)})


GATE = Phase3Gate()
