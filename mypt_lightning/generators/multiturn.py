"""Phase 4 multi-turn conversations: 2-4 turns with clean boundaries and carried context.

Conversation types (``_meta.category``)::

    followup       context in turn 1, then 1-2 follow-up questions about the same document
    clarification  a vague request, a clarifying question back, then the real question;
                   the passage arrives as assistant_context (retrieved for that turn)
    topic_switch   turn 2 asks about another document (new context); in mixed mode some
                   switches also change language, because the USER switched (the answer follows)
    carryover      A, then B, then "back to the first document": answered from turn 1's context

Any of them may end with a short thanks/you're-welcome turn, never beyond 4 turns. Each
answer is grounded in a context the model has seen in the conversation (checked) and cites
its document. All turns stay in one language unless the user switches (``_meta.language_switch``).
"""

from __future__ import annotations

import random

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    add_docs_dir_argument,
    build_arg_parser,
    entry_points,
    episode,
    language_plan,
    make_rng,
    pick_template,
)
from mypt_lightning.generators.qa_bank import Fact, facts_by_doc, facts_by_language, format_context, load_facts, passage
from mypt_lightning.generators.rag_chat import cited_answer
from mypt_lightning.tokens.system_prompts import CHAT_SYSTEM_PROMPTS
from mypt_lightning.workspace.store import Workspace

NAME = "multiturn"
CATEGORIES = ("followup", "clarification", "topic_switch", "carryover")
MIN_TURNS, MAX_TURNS = 2, 4

PHRASES = {
    "followup": {"en": ["Another question about that document: {q}", "Follow-up: {q}", "And one more thing: {q}",
                        "{q}", "Thanks. {q}", "Okay. {q}"],
                 "de": ["Noch eine Frage zu dem Dokument: {q}", "Nachfrage: {q}", "Und noch etwas: {q}",
                        "{q}", "Danke. {q}", "Okay. {q}"]},
    "switch": {"en": ["Different topic: {q}", "Let's switch topics. {q}", "Something else: {q}", "New question: {q}"],
               "de": ["Anderes Thema: {q}", "Themawechsel: {q}", "Etwas anderes: {q}", "Neue Frage: {q}"]},
    "language_switch": {"en": ["Let's continue in English. {q}", "In English, please: {q}"],
                        "de": ["Jetzt bitte auf Deutsch weiter. {q}", "Auf Deutsch, bitte: {q}"]},
    "carryover": {"en": ["Back to the first document: {q}", "Going back to \"{title}\": {q}",
                         "One more about the first text: {q}"],
                  "de": ["Zurück zum ersten Dokument: {q}", "Noch einmal zu „{title}“: {q}",
                         "Noch eine Frage zum ersten Text: {q}"]},
    "vague": {"en": ["I have a question about {topic}.", "Can you help me with {topic}?", "Quick question regarding {topic}."],
              "de": ["Ich habe eine Frage zum Thema „{topic_bare}“.", "Kannst du mir beim Thema „{topic_bare}“ helfen?",
                     "Kurze Frage zu „{topic_bare}“."]},
    "clarify": {"en": ["Of course. What exactly would you like to know about {topic}?",
                       "Sure. What do you want to know about {topic}?",
                       "Happy to help. Could you tell me what specifically you need to know?"],
                "de": ["Gern. Was genau möchtest du zum Thema „{topic_bare}“ wissen?",
                       "Klar. Was möchtest du dazu wissen?",
                       "Mache ich gern. Was genau interessiert dich daran?"]},
    "first": {"en": ["{q}", "I have a document here. {q}", "Please read this. {q}"],
              "de": ["{q}", "Ich habe hier ein Dokument. {q}", "Lies bitte mal. {q}"]},
}
CLOSINGS = {
    "en": [("Thanks, that's all.", "You're welcome! Let me know if you need anything else."),
           ("Great, thank you!", "Glad I could help."),
           ("Perfect, thanks.", "You're welcome!")],
    "de": [("Danke, das war's.", "Gern geschehen! Melde dich, wenn du noch etwas brauchst."),
           ("Super, danke!", "Freut mich, dass ich helfen konnte."),
           ("Perfekt, danke.", "Gern geschehen!")],
}


class _Builder:
    """Accumulates messages and checks each answer against the contexts shown so far."""

    def __init__(self, ws: Workspace, rng: random.Random):
        self.ws, self.rng = ws, rng
        self.messages: list[dict] = []
        self.seen_context = ""
        self.templates: list[str] = []

    def user(self, content: str, context: str | None = None) -> None:
        msg = {"role": "user", "content": content}
        if context:
            msg["context"] = context
            self.seen_context += "\n" + context
        self.messages.append(msg)

    def assistant_context(self, content: str) -> None:
        self.messages.append({"role": "assistant_context", "content": content})
        self.seen_context += "\n" + content

    def answer(self, fact: Fact, lang: str) -> None:
        if fact.evidence not in self.seen_context:
            raise AssertionError(f"{NAME}: answer about {fact.doc_id} without its evidence in view")
        title = self.ws.resolve(fact.doc_id).title
        msg, _ = cited_answer(fact.answer, fact, title, lang, self.rng, think_share=0.4)
        self.messages.append(msg)

    def say(self, content: str) -> None:
        self.messages.append({"role": "assistant", "content": content})

    def phrase(self, kind: str, lang: str, **fields) -> str:
        text, i = pick_template(self.rng, PHRASES[kind][lang])
        self.templates.append(f"{kind}{i}")
        return text.format(**fields)

    def turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "user")


def _context(ws: Workspace, fact: Fact, rng: random.Random, whole_doc: bool) -> str:
    doc = ws.resolve(fact.doc_id)
    return format_context(doc, doc.text if whole_doc else passage(doc, fact.evidence, rng, before=2, after=2))


def make_record(ws: Workspace, by_lang: dict, by_doc: dict, lang: str, category: str, rng: random.Random,
                allow_language_switch: bool):
    b = _Builder(ws, rng)
    facts = by_lang[lang]
    meta: dict = {}
    if category == "followup":
        doc_id = rng.choice(sorted({f.doc_id for f in facts if len(by_doc[f.doc_id]) >= 2}))
        chosen = rng.sample(by_doc[doc_id], k=min(len(by_doc[doc_id]), rng.choice((2, 3))))
        b.user(b.phrase("first", lang, q=chosen[0].question), _context(ws, chosen[0], rng, whole_doc=True))
        b.answer(chosen[0], lang)
        for fact in chosen[1:]:
            b.user(b.phrase("followup", lang, q=fact.question))
            b.answer(fact, lang)
        doc_ids = [doc_id]
    elif category == "clarification":
        fact = rng.choice(facts)
        b.user(b.phrase("vague", lang, topic=fact.topic, topic_bare=fact.topic_bare))
        b.say(b.phrase("clarify", lang, topic=fact.topic, topic_bare=fact.topic_bare))
        b.user(fact.question)
        b.assistant_context(_context(ws, fact, rng, whole_doc=False))
        b.answer(fact, lang)
        others = [f for f in by_doc[fact.doc_id] if f != fact]
        if others and rng.random() < 0.5:
            second = rng.choice(others)
            b.user(b.phrase("followup", lang, q=second.question))
            b.assistant_context(_context(ws, second, rng, whole_doc=False))
            b.answer(second, lang)
        doc_ids = [fact.doc_id]
    elif category == "topic_switch":
        first = rng.choice(facts)
        b.user(b.phrase("first", lang, q=first.question), _context(ws, first, rng, whole_doc=False))
        b.answer(first, lang)
        other_lang = "de" if lang == "en" else "en"
        if allow_language_switch and other_lang in by_lang and rng.random() < 0.25:
            second = rng.choice(by_lang[other_lang])
            b.user(b.phrase("language_switch", other_lang, q=second.question), _context(ws, second, rng, whole_doc=False))
            b.answer(second, other_lang)
            meta["language_switch"] = f"{lang}->{other_lang}"
        else:
            second = rng.choice([f for f in facts if f.doc_id != first.doc_id])
            b.user(b.phrase("switch", lang, q=second.question), _context(ws, second, rng, whole_doc=False))
            b.answer(second, lang)
        doc_ids = [first.doc_id, second.doc_id]
    else:  # carryover
        doc_id = rng.choice(sorted({f.doc_id for f in facts if len(by_doc[f.doc_id]) >= 2}))
        first, later = rng.sample(by_doc[doc_id], k=2)
        middle = rng.choice([f for f in facts if f.doc_id != doc_id])
        b.user(b.phrase("first", lang, q=first.question), _context(ws, first, rng, whole_doc=True))
        b.answer(first, lang)
        b.user(b.phrase("switch", lang, q=middle.question), _context(ws, middle, rng, whole_doc=False))
        b.answer(middle, lang)
        b.user(b.phrase("carryover", lang, q=later.question, title=ws.resolve(doc_id).title))
        b.answer(later, lang)
        doc_ids = [doc_id, middle.doc_id]
    if b.turns() < MAX_TURNS and rng.random() < 0.3:
        closing_lang = lang if "language_switch" not in meta else meta["language_switch"][-2:]
        (user_text, reply), i = pick_template(rng, CLOSINGS[closing_lang])
        b.user(user_text)
        b.say(reply)
        b.templates.append(f"closing{i}")
    turns = b.turns()
    if not MIN_TURNS <= turns <= MAX_TURNS:
        raise AssertionError(f"{NAME}: {turns} turns")
    template = f"{category}/{lang}/" + "+".join(b.templates)
    record = episode(rng.choice(CHAT_SYSTEM_PROMPTS), b.messages, lang, generator=NAME, category=category,
                     template=template, turns=turns, doc_ids=doc_ids, **meta)
    return record, template


def generate(num_examples: int, seed: int, language: str = "mixed", *, docs_dir=None,
             de_share: float = DEFAULT_DE_SHARE) -> Generated:
    ws = Workspace(docs_dir)
    facts = load_facts(ws)
    by_lang, by_doc = facts_by_language(facts), facts_by_doc(facts)
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(num_examples)]
    make_rng(seed, NAME, "categories").shuffle(categories)
    rng = make_rng(seed, NAME)
    out = Generated.empty(NAME)
    for lang, category in zip(plan, categories):
        record, template = make_record(ws, by_lang, by_doc, lang, category, rng, allow_language_switch=language == "mixed")
        out.add(record, category, template)
    turns = [r["_meta"]["turns"] for r in out.records]
    out.stats.notes.append("turns: " + ", ".join(f"{t}={turns.count(t)}" for t in range(MIN_TURNS, MAX_TURNS + 1)))
    out.stats.notes.append(f"language switches: {sum(1 for r in out.records if 'language_switch' in r['_meta'])}")
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_multiturn_sft.py",
        "Phase 4 multi-turn conversations (2-4 turns) over the workspace documents (EN/DE).",
        default_num=3000,
        epilog=__doc__,
    )
    add_docs_dir_argument(parser)
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["CATEGORIES", "MAX_TURNS", "MIN_TURNS", "NAME", "build_parser", "cli", "generate", "main"]
