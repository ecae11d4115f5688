"""Phase 3 RAG chat: questions over workspace passages, with user_context, think and cite.

Each record puts one or two passages in the user's context block (``[doc_id] Title`` then
the text), asks a question, and trains an answer grounded in the passage that holds the
fact's evidence, with ``cite`` = that doc id. ``think`` (most records) names the source and
quotes the evidence. A share of records (``--unanswerable_share``) asks something the
passages do not cover; the answer says so, cites nothing, and invents nothing.

Every answerable record is checked: the evidence sentence is in the context it shows.
Facts come from ``workspace/docs/questions.jsonl`` (see ``qa_bank``); German records use
German documents and English records English ones.
"""

from __future__ import annotations

import random

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    add_docs_dir_argument,
    build_arg_parser,
    check_share,
    entry_points,
    episode,
    language_plan,
    make_rng,
    pick_template,
    share_plan,
)
from mypt_lightning.generators.qa_bank import Fact, facts_by_language, format_context, load_facts, passage
from mypt_lightning.tokens.system_prompts import CHAT_SYSTEM_PROMPTS
from mypt_lightning.workspace.store import Workspace

NAME = "rag_chat"

QUESTION_TEMPLATES = {
    "en": ["{q}", "Based on the document: {q}", "{q} Please answer using the context.", "Context question: {q}",
           "Can you check the text above? {q}", "{q} Use the provided passage."],
    "de": ["{q}", "Laut Dokument: {q}", "{q} Bitte beantworte das anhand des Kontexts.", "Frage zum Kontext: {q}",
           "Kannst du im Text oben nachsehen? {q}", "{q} Nutze den bereitgestellten Abschnitt."],
}
ANSWER_TEMPLATES = {
    "en": ["{a}", "{a}", "Based on the provided context: {a}", "According to the passage, here is the answer. {a}",
           "The context answers this. {a}"],
    "de": ["{a}", "{a}", "Laut dem bereitgestellten Kontext: {a}", "Der Abschnitt beantwortet das. {a}",
           "Im Kontext steht die Antwort. {a}"],
}
THINK_TEMPLATES = {
    "en": ["The question is about {topic}. The passage from {doc_id} says: \"{evidence}\"",
           "Relevant source: {doc_id} ({title}). It states: \"{evidence}\"",
           "Looking at the context, {doc_id} covers {topic}. Key sentence: \"{evidence}\"",
           "The answer is in {doc_id} (\"{title}\")."],
    "de": ["Gefragt ist nach „{topic_bare}“. Im Abschnitt aus {doc_id} steht: „{evidence}“",
           "Relevante Quelle: {doc_id} ({title}). Dort heißt es: „{evidence}“",
           "Im Kontext behandelt {doc_id} das Thema „{topic_bare}“. Entscheidender Satz: „{evidence}“",
           "Die Antwort steht in {doc_id} („{title}“)."],
}
UNANSWERABLE_ANSWERS = {
    "en": ["The provided context does not contain information about {topic}.",
           "I can't answer that from the given context: it covers {titles}, but says nothing about {topic}.",
           "The passages above don't mention {topic}, so I can't answer this from them."],
    "de": ["Der bereitgestellte Kontext enthält keine Angaben zu „{topic_bare}“.",
           "Das kann ich mit dem Kontext nicht beantworten: Er behandelt {titles}, aber nicht „{topic_bare}“.",
           "Zu „{topic_bare}“ steht in den Abschnitten oben leider nichts."],
}
UNANSWERABLE_THINK = {
    "en": ["The context is about {titles}. None of it mentions {topic}, so the answer is not in the context."],
    "de": ["Der Kontext behandelt {titles}. Zu „{topic_bare}“ steht dort nichts, also kann ich es nicht beantworten."],
}


def cited_answer(content: str, fact: Fact, title: str, lang: str, rng: random.Random,
                 think_share: float) -> tuple[dict, int | None]:
    """An assistant message citing ``fact``'s document; in ``think_share`` of the draws it starts
    with a think that names the source (the think's template index, else None)."""
    if rng.random() >= think_share:
        return {"role": "assistant", "content": content, "cite": fact.doc_id}, None
    think, ti = pick_template(rng, THINK_TEMPLATES[lang])
    return {"role": "assistant", "think": fact.fill(think, title=title), "content": content, "cite": fact.doc_id}, ti


def _titles(docs, lang: str) -> str:
    names = [f'"{d.title}"' if lang == "en" else f"„{d.title}“" for d in docs]
    return names[0] if len(names) == 1 else (" and " if lang == "en" else " und ").join(names)


def _distractor(ws: Workspace, facts: list[Fact], exclude: set[str], rng: random.Random):
    other = rng.choice([f for f in facts if f.doc_id not in exclude])
    doc = ws.resolve(other.doc_id)
    return doc, passage(doc, other.evidence, rng, before=2, after=2)


def make_record(ws: Workspace, facts: list[Fact], lang: str, rng: random.Random, unanswerable: bool):
    """One phase 3 record and its (category, template id)."""
    system = rng.choice(CHAT_SYSTEM_PROMPTS)
    fact = rng.choice(facts)
    question, qi = pick_template(rng, QUESTION_TEMPLATES[lang])
    question = fact.fill(question)
    if unanswerable:
        docs = []
        for _ in range(rng.choice((1, 2))):
            doc, text = _distractor(ws, facts, {fact.doc_id, *(d.doc_id for d, _ in docs)}, rng)
            docs.append((doc, text))
        context = "\n\n".join(format_context(d, t) for d, t in docs)
        assert fact.evidence not in context
        titles = _titles([d for d, _ in docs], lang)
        content, ai = pick_template(rng, UNANSWERABLE_ANSWERS[lang])
        answer = {"role": "assistant", "content": fact.fill(content, titles=titles)}
        if rng.random() < 0.7:
            answer = {"role": "assistant", "think": fact.fill(UNANSWERABLE_THINK[lang][0], titles=titles), **answer}
        template = f"unanswerable/{lang}/q{qi}/a{ai}/ctx{len(docs)}"
        category, doc_ids = "unanswerable", [d.doc_id for d, _ in docs]
    else:
        doc = ws.resolve(fact.doc_id)
        parts = [(doc, passage(doc, fact.evidence, rng, before=2, after=2))]
        if rng.random() < 0.4:
            parts.append(_distractor(ws, facts, {fact.doc_id}, rng))
            rng.shuffle(parts)
        context = "\n\n".join(format_context(d, t) for d, t in parts)
        if fact.evidence not in context:
            raise AssertionError(f"{NAME}: evidence of {fact.doc_id} missing from its context")
        content, ai = pick_template(rng, ANSWER_TEMPLATES[lang])
        answer, ti = cited_answer(fact.fill(content, title=doc.title), fact, doc.title, lang, rng, think_share=0.8)
        template = f"answerable/{lang}/q{qi}/a{ai}/t{ti}/ctx{len(parts)}"
        category, doc_ids = "answerable", [d.doc_id for d, _ in parts]
    record = episode(system, [{"role": "user", "content": question, "context": context}, answer], lang,
                     generator=NAME, category=category, template=template, doc_ids=doc_ids, fact_doc=fact.doc_id)
    return record, category, template


def generate(num_examples: int, seed: int, language: str = "mixed", *, unanswerable_share: float = 0.15,
             docs_dir=None, de_share: float = DEFAULT_DE_SHARE) -> Generated:
    check_share("unanswerable_share", unanswerable_share)
    ws = Workspace(docs_dir)
    by_lang = facts_by_language(load_facts(ws))
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    for lang in set(plan):
        if len({f.doc_id for f in by_lang.get(lang, [])}) < 3:
            raise ValueError(f"{NAME}: the workspace needs facts from at least 3 '{lang}' documents")
    kinds = share_plan(num_examples, unanswerable_share, make_rng(seed, NAME, "kinds"))
    rng = make_rng(seed, NAME)
    out = Generated.empty(NAME)
    for lang, unanswerable in zip(plan, kinds):
        record, category, template = make_record(ws, by_lang[lang], lang, rng, unanswerable)
        out.add(record, category, template)
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_rag_chat_sft.py",
        "Phase 3 RAG chat over the workspace documents: user_context + think + cite (EN/DE).",
        default_num=2000,
        epilog=__doc__,
    )
    add_docs_dir_argument(parser)
    parser.add_argument("--unanswerable_share", type=float, default=0.15,
                        help="share of questions the context cannot answer (default 0.15)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["NAME", "build_parser", "cited_answer", "cli", "generate", "main", "make_record"]
