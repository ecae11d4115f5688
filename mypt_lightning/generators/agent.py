"""Phase 5 simple tool use: one tool call, its real result, a grounded and cited answer.

Categories (``_meta.category``; shares are exact quotas, the rest split by weight)::

    SEARCH        workspace.search -> answer from the snippet of the right document
    GET_DOC       the user names a document -> workspace.get_doc -> answer from its text
    LIST          workspace.list_docs (domain / language filter) -> a listing
    SUMMARIZE     workspace.summarize -> the summary
    NO_TOOL       (--no_tool_share, default 20%) general questions answered directly
    WRONG_TOOL    (--wrong_tool_share, default 8%) a wrong first call whose result does not
                  help, a think that says why, then the right call and the answer

Every tool result is what ``Workspace.call`` returned for exactly those arguments, and an
episode whose answer is not supported by its results is rejected and drawn again (the
counts are printed). The system prompt is one of the eight agentic variants.
"""

from __future__ import annotations

import random
from functools import partial

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    add_docs_dir_argument,
    build_arg_parser,
    check_share,
    entry_points,
    language_plan,
    make_rng,
    pick_template,
)
from mypt_lightning.generators.qa_bank import Fact, facts_by_language, load_facts
from mypt_lightning.generators.tooluse import (
    DOMAIN_NAMES,
    NO_TOOL_THINKS,
    ToolSession,
    Unsupported,
    draw_supported,
    evidence_rank,
    list_answer,
    no_tool_episode,
    question_query,
)
from mypt_lightning.tokens.system_prompts import AGENTIC_SYSTEM_PROMPTS
from mypt_lightning.workspace.store import Workspace

NAME = "agent"
TOOL_CATEGORIES = {"SEARCH": 0.55, "GET_DOC": 0.15, "LIST": 0.1, "SUMMARIZE": 0.2}

USER = {
    "SEARCH": {"en": ["{q}", "Can you look this up in our documents? {q}", "Search the workspace: {q}",
                      "{q} Please check the docs.", "I need this from our documentation: {q}"],
               "de": ["{q}", "Kannst du das in unseren Dokumenten nachsehen? {q}", "Durchsuche den Workspace: {q}",
                      "{q} Schau bitte in den Unterlagen nach.", "Ich brauche das aus unserer Dokumentation: {q}"]},
    "GET_DOC": {"en": ["Open {doc_id} and tell me: {q}", "In the document \"{title}\": {q}", "Check {doc_id}. {q}"],
                "de": ["Öffne {doc_id} und sag mir: {q}", "Im Dokument „{title}“: {q}", "Schau in {doc_id} nach. {q}"]},
    "SUMMARIZE": {"en": ["Summarize \"{title}\".", "Give me a short summary of {doc_id}.", "What is {doc_id} about?",
                         "Can you summarize the document {doc_id} for me?"],
                  "de": ["Fasse „{title}“ zusammen.", "Gib mir eine kurze Zusammenfassung von {doc_id}.",
                         "Worum geht es in {doc_id}?", "Kannst du mir das Dokument {doc_id} zusammenfassen?"]},
    "LIST": {"en": ["Which {domain} documents do we have?", "List the {domain} documents in the workspace.",
                    "What {domain} documents are there?", "Which {language} {domain} documents are available?"],
             "de": ["Welche Dokumente zum Thema {domain} haben wir?", "Liste die Dokumente zum Thema {domain} auf.",
                    "Was für Dokumente gibt es zum Thema {domain}?", "Welche {language} Dokumente zum Thema {domain} gibt es?"]},
}
_LANG_ADJ = {"en": {"en": "English", "de": "German"}, "de": {"en": "englischen", "de": "deutschen"}}
CALL_THINK = {
    "SEARCH": {"en": ["I need to look this up in the workspace.", "This is about {topic}; I'll search the documents.",
                      "Let me search the documents for this."],
               "de": ["Das muss ich im Workspace nachschlagen.", "Es geht um „{topic_bare}“; ich durchsuche die Dokumente.",
                      "Ich suche in den Dokumenten danach."]},
    "GET_DOC": {"en": ["The user named the document, so I can open it directly."],
                "de": ["Das Dokument ist genannt, also öffne ich es direkt."]},
    "SUMMARIZE": {"en": ["The summarize tool fits this request."], "de": ["Dafür passt das Zusammenfassungs-Werkzeug."]},
    "LIST": {"en": ["I'll list the matching documents."], "de": ["Ich liste die passenden Dokumente auf."]},
}
CORRECTION_THINK = {
    "list": {"en": "The document list only shows titles; it does not answer the question. I should search the contents instead.",
             "de": "Die Dokumentliste zeigt nur Titel und beantwortet die Frage nicht. Ich sollte stattdessen den Inhalt durchsuchen."},
    "summary": {"en": "The summary does not mention {topic}. I need the full document.",
                "de": "Die Zusammenfassung erwähnt „{topic_bare}“ nicht. Ich brauche das vollständige Dokument."},
}


def _search_args(fact: Fact, rng: random.Random) -> dict:
    args = {"query": fact.query if rng.random() < 0.7 else question_query(fact.question)}
    if rng.random() < 0.3:
        args["top_k"] = 3
    return args


def _search(ws, fact, lang, rng, user_text, tpl) -> tuple[ToolSession, str]:
    s = ToolSession(ws, user_text)
    think, ti = pick_template(rng, CALL_THINK["SEARCH"][lang])
    result = s.call("workspace.search", _search_args(fact, rng), fact.fill(think) if rng.random() < 0.7 else None)
    ai = s.answer_fact(fact, lang, rng, rank=evidence_rank(result, fact, "search did not surface the evidence"))
    return s, f"{tpl}/c{ti}/a{ai}"


def make_episode(ws: Workspace, facts: list[Fact], lang: str, category: str, rng: random.Random):
    """(messages, template id) for one phase 5 episode; raises Unsupported to be redrawn."""
    if category == "NO_TOOL":
        return no_tool_episode(lang, rng, NO_TOOL_THINKS)
    fact = rng.choice(facts)
    doc = ws.resolve(fact.doc_id)
    if category == "SEARCH":
        user, ui = pick_template(rng, USER["SEARCH"][lang])
        s, tpl = _search(ws, fact, lang, rng, fact.fill(user), f"SEARCH/{lang}/u{ui}")
        return s.messages, tpl
    if category == "GET_DOC":
        user, ui = pick_template(rng, USER["GET_DOC"][lang])
        s = ToolSession(ws, fact.fill(user, doc_id=doc.doc_id, title=doc.title))
        args = {"title": doc.title} if "{title}" in user else {"doc_id": doc.doc_id}
        think = CALL_THINK["GET_DOC"][lang][0] if rng.random() < 0.5 else None
        s.call("workspace.get_doc", args, think)
        ai = s.answer_fact(fact, lang, rng)
        return s.messages, f"GET_DOC/{lang}/u{ui}/a{ai}"
    if category == "SUMMARIZE":
        user, ui = pick_template(rng, USER["SUMMARIZE"][lang])
        s = ToolSession(ws, user.format(doc_id=doc.doc_id, title=doc.title))
        think = CALL_THINK["SUMMARIZE"][lang][0] if rng.random() < 0.5 else None
        result = s.call("workspace.summarize", {"doc_id": doc.doc_id}, think)
        s.answer_summary(doc, result["summary"], lang)
        return s.messages, f"SUMMARIZE/{lang}/u{ui}"
    if category == "LIST":
        user, ui = pick_template(rng, USER["LIST"][lang])
        with_language = "{language}" in user
        args = {"domain": doc.domain}
        if with_language:
            args["language"] = doc.language
        s = ToolSession(ws, user.format(domain=DOMAIN_NAMES[lang][doc.domain], language=_LANG_ADJ[lang][doc.language]))
        think = CALL_THINK["LIST"][lang][0] if rng.random() < 0.5 else None
        result = s.call("workspace.list_docs", args, think)
        text, titles = list_answer(result, lang, doc.domain, args.get("language"))
        s.answer(text, support=titles)
        return s.messages, f"LIST/{lang}/u{ui}"
    if category == "WRONG_TOOL":
        if rng.random() < 0.5:  # list instead of search
            user, ui = pick_template(rng, USER["SEARCH"][lang])
            s = ToolSession(ws, fact.fill(user))
            first = s.call("workspace.list_docs", {"domain": doc.domain})
            if any(fact.evidence in str(v) for v in first.values()):
                raise Unsupported("the wrong call happened to contain the answer")
            result = s.call("workspace.search", _search_args(fact, rng), CORRECTION_THINK["list"][lang])
            ai = s.answer_fact(fact, lang, rng, rank=evidence_rank(result, fact, "search did not surface the evidence"))
            return s.messages, f"WRONG_TOOL/{lang}/list-search/u{ui}/a{ai}"
        user, ui = pick_template(rng, USER["GET_DOC"][lang])
        s = ToolSession(ws, fact.fill(user, doc_id=doc.doc_id, title=doc.title))
        first = s.call("workspace.summarize", {"doc_id": doc.doc_id})
        if fact.evidence in first["summary"]:
            raise Unsupported("the summary already answers the question")
        s.call("workspace.get_doc", {"doc_id": doc.doc_id}, fact.fill(CORRECTION_THINK["summary"][lang]))
        ai = s.answer_fact(fact, lang, rng)
        return s.messages, f"WRONG_TOOL/{lang}/summary-getdoc/u{ui}/a{ai}"
    raise ValueError(f"unknown category {category!r}")


def category_plan(num: int, no_tool_share: float, wrong_tool_share: float, rng: random.Random) -> list[str]:
    """Exact quotas for NO_TOOL and WRONG_TOOL; the tool categories share the rest by weight."""
    check_share("no_tool_share", no_tool_share)
    check_share("wrong_tool_share", wrong_tool_share)
    if no_tool_share + wrong_tool_share > 1.0:
        raise ValueError("no_tool_share + wrong_tool_share must be <= 1")
    n_no, n_wrong = round(num * no_tool_share), round(num * wrong_tool_share)
    rest = num - n_no - n_wrong
    names, weights = list(TOOL_CATEGORIES), list(TOOL_CATEGORIES.values())
    plan = ["NO_TOOL"] * n_no + ["WRONG_TOOL"] * n_wrong + rng.choices(names, weights=weights, k=rest)
    rng.shuffle(plan)
    return plan


def generate(num_examples: int, seed: int, language: str = "mixed", *, no_tool_share: float = 0.2,
             wrong_tool_share: float = 0.08, docs_dir=None, de_share: float = DEFAULT_DE_SHARE) -> Generated:
    ws = Workspace(docs_dir)
    by_lang = facts_by_language(load_facts(ws))
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    categories = category_plan(num_examples, no_tool_share, wrong_tool_share, make_rng(seed, NAME, "categories"))
    rng = make_rng(seed, NAME)
    out = Generated.empty(NAME)
    for lang, category in zip(plan, categories):
        make = partial(make_episode, ws, by_lang[lang], lang, category, rng)
        messages, template = draw_supported(make, category, out.stats)
        out.add_episode(rng.choice(AGENTIC_SYSTEM_PROMPTS), messages, lang, category=category, template=template)
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_agent_sft.py",
        "Phase 5 single-step tool use over the workspace (real tool results, NO_TOOL, corrections; EN/DE).",
        default_num=5000,
        epilog=__doc__,
    )
    add_docs_dir_argument(parser)
    parser.add_argument("--no_tool_share", type=float, default=0.2, help="share of NO_TOOL episodes (default 0.2)")
    parser.add_argument("--wrong_tool_share", type=float, default=0.08,
                        help="share of wrong-tool-then-correction episodes (default 0.08)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["NAME", "TOOL_CATEGORIES", "build_parser", "category_plan", "cli", "generate", "main", "make_episode"]
