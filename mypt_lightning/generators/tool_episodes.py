"""Phase 6 agentic RAG: multi-step tool chains, every step executed against the workspace.

Patterns (``_meta.pattern``; ``--pattern_weights`` sets the mix, NO_TOOL 20% by default)::

    SEARCH_ANSWER          search -> answer from the right document's snippet
    SEARCH_GETDOC_ANSWER   search -> the snippet is not enough -> get_doc(top hit) -> answer
    LIST_SELECT_SUMMARIZE  list_docs(domain) -> pick the requested document -> summarize -> answer
    ERROR_RECOVERY         a call fails (unknown doc id, wrong argument name, unknown domain);
                           the think reads the error object, the corrected call succeeds -> answer
    NO_TOOL                answered directly

Each think says why the next step is needed, each final answer cites its document, and
:class:`~mypt_lightning.generators.tooluse.ToolSession` rejects an episode whose final
answer is not supported by its own tool results (an evidence sentence, a summary or the
listed titles must appear in a successful result). Rejections are counted and printed.
"""

from __future__ import annotations

import random
import re
from functools import partial

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    add_docs_dir_argument,
    build_arg_parser,
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
    hit,
    list_answer,
    no_tool_episode,
    question_query,
)
from mypt_lightning.tokens.system_prompts import AGENTIC_SYSTEM_PROMPTS
from mypt_lightning.workspace.store import Workspace
from mypt_lightning.workspace.analysis import fold

NAME = "tool_episodes"
PATTERNS = ("SEARCH_ANSWER", "SEARCH_GETDOC_ANSWER", "LIST_SELECT_SUMMARIZE", "ERROR_RECOVERY", "NO_TOOL")
DEFAULT_WEIGHTS = {"SEARCH_ANSWER": 0.2, "SEARCH_GETDOC_ANSWER": 0.25, "LIST_SELECT_SUMMARIZE": 0.15,
                   "ERROR_RECOVERY": 0.2, "NO_TOOL": 0.2}

T = {  # phrasings, per language
    "ask": {"en": ["{q}", "Please find out: {q}", "Can you check our documents? {q}", "{q} Look it up, please."],
            "de": ["{q}", "Finde bitte heraus: {q}", "Kannst du in unseren Dokumenten nachsehen? {q}",
                   "{q} Schlag das bitte nach."]},
    "ask_doc": {"en": ["What does \"{title}\" say about {topic}?", "In \"{title}\", what is said about {topic}?"],
                "de": ["Was steht in „{title}“ zum Thema „{topic_bare}“?", "Was sagt „{title}“ zu „{topic_bare}“?"]},
    "think_search": {"en": ["I don't know which document covers this, so I'll search first.",
                            "Let me search the workspace for {topic}."],
                     "de": ["Ich weiß nicht, welches Dokument das behandelt, also suche ich zuerst.",
                            "Ich durchsuche den Workspace nach „{topic_bare}“."]},
    "think_search_title": {"en": ["I'll search for the document \"{title}\" first."],
                           "de": ["Ich suche zuerst nach dem Dokument „{title}“."]},
    "think_open": {"en": ["{doc_id} looks relevant, but the snippet does not answer the question. I'll open the full document.",
                          "The top hit is {doc_id}. I need its full text to find the details about {topic}."],
                   "de": ["{doc_id} wirkt passend, aber der Ausschnitt beantwortet die Frage nicht. Ich öffne das ganze Dokument.",
                          "Der beste Treffer ist {doc_id}. Für die Details zu „{topic_bare}“ brauche ich den vollständigen Text."]},
    "ask_list": {"en": ["Which {domain} documents do we have? Summarize \"{title}\" for me.",
                        "Show me our {domain} documents and give me a summary of the one titled \"{title}\".",
                        "List the {domain} documents, then summarize \"{title}\"."],
                 "de": ["Welche Dokumente zum Thema {domain} haben wir? Fasse mir „{title}“ zusammen.",
                        "Zeig mir unsere Dokumente zum Thema {domain} und fasse das mit dem Titel „{title}“ zusammen.",
                        "Liste die Dokumente zum Thema {domain} auf und fasse dann „{title}“ zusammen."]},
    "think_select": {"en": ["The list contains \"{title}\" with the id {doc_id}. I'll summarize it."],
                     "de": ["In der Liste steht „{title}“ mit der ID {doc_id}. Die fasse ich zusammen."]},
    "answer_list": {"en": "There are {n} {domain} documents. \"{title}\" ({doc_id}) is one of them. Summary: {summary}",
                    "de": "Es gibt {n} Dokumente zum Thema {domain}, darunter „{title}“ ({doc_id}). Zusammenfassung: {summary}"},
    "ask_open": {"en": ["Open the document \"{title}\" and tell me: {q}", "Look in \"{title}\": {q}"],
                 "de": ["Öffne das Dokument „{title}“ und sag mir: {q}", "Schau in „{title}“ nach: {q}"]},
    "think_guess": {"en": ["I'll try opening it by a guessed id."], "de": ["Ich versuche es mit einer vermuteten ID."]},
    "recover_id": {"en": "There is no document \"{bad}\". The suggestions include {doc_id}, which matches the title. I'll open that one.",
                   "de": "Ein Dokument „{bad}“ gibt es nicht. Unter den Vorschlägen ist {doc_id}, das passt zum Titel. Das öffne ich."},
    "ask_summary": {"en": ["Summarize {doc_id}.", "Give me a summary of {doc_id}."],
                    "de": ["Fasse {doc_id} zusammen.", "Gib mir eine Zusammenfassung von {doc_id}."]},
    "recover_arg": {"en": "The tool rejected the argument \"{bad}\"; it expects \"doc_id\". I'll call it again correctly.",
                    "de": "Das Werkzeug kennt das Argument „{bad}“ nicht, es erwartet „doc_id“. Ich rufe es noch einmal richtig auf."},
    "ask_domain": {"en": ["Which {domain} documents are in the workspace?", "List all {domain} documents."],
                   "de": ["Welche Dokumente zum Thema {domain} sind im Workspace?", "Liste alle Dokumente zum Thema {domain} auf."]},
    "recover_domain": {"en": "\"{bad}\" is not a known domain; the available ones include \"{good}\". I'll use that.",
                       "de": "„{bad}“ ist keine bekannte Kategorie; verfügbar ist unter anderem „{good}“. Die verwende ich."},
}
_BAD_DOMAINS = {"policy": ["policies", "Policy", "rules"], "setup": ["setups", "guides", "howto"],
                "product": ["products", "Produkte", "release"], "history": ["historie", "History", "past"],
                "science": ["wissenschaft", "Science", "research"]}
_BAD_ARGS = ["document", "id", "doc", "file", "document_id"]  # never "name": it collides with the tool name


def _slug(title: str) -> str:
    """The id a user might guess from a title: "Die Hamburger Speicherstadt" -> "die-hamburger-speicherstadt"."""
    return re.sub(r"[^a-z0-9]+", "-", fold(title)).strip("-")


def _search_answer(ws, fact, lang, rng):
    user, ui = pick_template(rng, T["ask"][lang])
    s = ToolSession(ws, fact.fill(user))
    think, ti = pick_template(rng, T["think_search"][lang])
    query = fact.query if rng.random() < 0.7 else question_query(fact.question)
    result = s.call("workspace.search", {"query": query}, fact.fill(think))
    ai = s.answer_fact(fact, lang, rng, rank=evidence_rank(result, fact, "search snippet lacks the evidence"))
    return s, f"SEARCH_ANSWER/{lang}/u{ui}/t{ti}/a{ai}"


def _search_getdoc_answer(ws, fact, lang, rng):
    doc = ws.resolve(fact.doc_id)
    if rng.random() < 0.5:
        user, ui = pick_template(rng, T["ask_doc"][lang])
        user, query, tag = fact.fill(user, title=doc.title), doc.title, "title"
    else:
        user, ui = pick_template(rng, T["ask"][lang])
        user, query, tag = fact.fill(user), fact.query, "q"
    s = ToolSession(ws, user)
    think, ti = pick_template(rng, T["think_search_title" if tag == "title" else "think_search"][lang])
    result = s.call("workspace.search", {"query": query}, fact.fill(think, title=doc.title))
    found = hit(result, fact.doc_id)
    if found is None or found[0] != 1:
        raise Unsupported("search did not rank the document first")
    if fact.evidence in found[1]["snippet"]:
        raise Unsupported("the snippet already answers")
    open_think, oi = pick_template(rng, T["think_open"][lang])
    s.call("workspace.get_doc", {"doc_id": doc.doc_id}, fact.fill(open_think, doc_id=doc.doc_id))
    ai = s.answer_fact(fact, lang, rng)
    return s, f"SEARCH_GETDOC_ANSWER/{lang}/{tag}/u{ui}/t{ti}/o{oi}/a{ai}"


def _list_select_summarize(ws, fact, lang, rng):
    doc = ws.resolve(fact.doc_id)
    domain = DOMAIN_NAMES[lang][doc.domain]
    user, ui = pick_template(rng, T["ask_list"][lang])
    s = ToolSession(ws, user.format(domain=domain, title=doc.title))
    listing = s.call("workspace.list_docs", {"domain": doc.domain})
    if not any(d["doc_id"] == doc.doc_id for d in listing["documents"]):
        raise Unsupported("the listing does not contain the requested document")
    result = s.call("workspace.summarize", {"doc_id": doc.doc_id},
                    T["think_select"][lang][0].format(title=doc.title, doc_id=doc.doc_id))
    content = T["answer_list"][lang].format(n=listing["count"], domain=domain, title=doc.title, doc_id=doc.doc_id,
                                           summary=result["summary"])
    s.answer(content, support=[doc.title, result["summary"]], cite=doc.doc_id)
    return s, f"LIST_SELECT_SUMMARIZE/{lang}/u{ui}"


def _error_recovery(ws, fact, lang, rng):
    doc = ws.resolve(fact.doc_id)
    kind = rng.choice(("doc_id", "argument", "domain"))
    if kind == "doc_id":
        user, ui = pick_template(rng, T["ask_open"][lang])
        s = ToolSession(ws, fact.fill(user, title=doc.title))
        bad = _slug(doc.title)
        error = s.call("workspace.get_doc", {"doc_id": bad}, T["think_guess"][lang][0], expect_error=True)
        if doc.doc_id not in error.get("suggestions", []):
            raise Unsupported("the error's suggestions do not include the document")
        s.call("workspace.get_doc", {"doc_id": doc.doc_id}, T["recover_id"][lang].format(bad=bad, doc_id=doc.doc_id))
        ai = s.answer_fact(fact, lang, rng)
        return s, f"ERROR_RECOVERY/{lang}/doc_id/u{ui}/a{ai}"
    if kind == "argument":
        user, ui = pick_template(rng, T["ask_summary"][lang])
        s = ToolSession(ws, user.format(doc_id=doc.doc_id))
        bad = rng.choice(_BAD_ARGS)
        s.call("workspace.summarize", {bad: doc.doc_id}, expect_error=True)
        result = s.call("workspace.summarize", {"doc_id": doc.doc_id}, T["recover_arg"][lang].format(bad=bad))
        s.answer_summary(doc, result["summary"], lang)
        return s, f"ERROR_RECOVERY/{lang}/argument/u{ui}"
    domain = DOMAIN_NAMES[lang][doc.domain]
    user, ui = pick_template(rng, T["ask_domain"][lang])
    s = ToolSession(ws, user.format(domain=domain))
    bad = rng.choice(_BAD_DOMAINS[doc.domain])
    error = s.call("workspace.list_docs", {"domain": bad}, expect_error=True)
    if doc.domain not in error.get("available", []):
        raise Unsupported("the error does not name the right domain")
    listing = s.call("workspace.list_docs", {"domain": doc.domain},
                     T["recover_domain"][lang].format(bad=bad, good=doc.domain))
    text, titles = list_answer(listing, lang, doc.domain, None)
    s.answer(text, support=titles)
    return s, f"ERROR_RECOVERY/{lang}/domain/u{ui}"


_BUILDERS = {"SEARCH_ANSWER": _search_answer, "SEARCH_GETDOC_ANSWER": _search_getdoc_answer,
             "LIST_SELECT_SUMMARIZE": _list_select_summarize, "ERROR_RECOVERY": _error_recovery}


def make_episode(ws: Workspace, facts: list[Fact], lang: str, pattern: str, rng: random.Random):
    if pattern == "NO_TOOL":
        return no_tool_episode(lang, rng, NO_TOOL_THINKS)
    session, template = _BUILDERS[pattern](ws, rng.choice(facts), lang, rng)
    return session.messages, template


def pattern_plan(num: int, weights: dict[str, float], rng: random.Random) -> list[str]:
    """Quotas proportional to ``weights`` (largest remainder), shuffled."""
    unknown = sorted(set(weights) - set(PATTERNS))
    if unknown or any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise ValueError(f"pattern weights must be non-negative over {PATTERNS}, got {weights}")
    total = sum(weights.values())
    exact = {p: num * weights.get(p, 0.0) / total for p in PATTERNS}
    counts = {p: int(exact[p]) for p in PATTERNS}
    for p in sorted(PATTERNS, key=lambda p: (-(exact[p] - counts[p]), PATTERNS.index(p)))[: num - sum(counts.values())]:
        counts[p] += 1
    plan = [p for p in PATTERNS for _ in range(counts[p])]
    rng.shuffle(plan)
    return plan


def parse_weights(text: str) -> dict[str, float]:
    """``"SEARCH_ANSWER=0.3,NO_TOOL=0.2"`` -> dict; unnamed patterns get weight 0."""
    weights = {p: 0.0 for p in PATTERNS}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in PATTERNS:
            raise ValueError(f"unknown pattern {name!r}; expected one of {PATTERNS}")
        weights[name.strip()] = float(value)
    return weights


def generate(num_examples: int, seed: int, language: str = "mixed", *, pattern_weights: dict | None = None,
             docs_dir=None, de_share: float = DEFAULT_DE_SHARE) -> Generated:
    ws = Workspace(docs_dir)
    by_lang = facts_by_language(load_facts(ws))
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    patterns = pattern_plan(num_examples, pattern_weights or DEFAULT_WEIGHTS, make_rng(seed, NAME, "patterns"))
    rng = make_rng(seed, NAME)
    out = Generated.empty(NAME)
    for lang, pattern in zip(plan, patterns):
        make = partial(make_episode, ws, by_lang[lang], lang, pattern, rng)
        messages, template = draw_supported(make, pattern, out.stats)
        steps = sum(1 for m in messages if m["role"] == "assistant_toolcall")
        out.add_episode(rng.choice(AGENTIC_SYSTEM_PROMPTS), messages, lang, category=pattern, template=template,
                        pattern=pattern, tool_calls=steps)
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_sft_tool_episodes.py",
        "Phase 6 multi-step agentic tool episodes over the workspace (validated, EN/DE).",
        default_num=5000,
        epilog=__doc__,
    )
    add_docs_dir_argument(parser)
    parser.add_argument("--pattern_weights", type=parse_weights, default=None,
                        help="e.g. SEARCH_ANSWER=0.2,SEARCH_GETDOC_ANSWER=0.25,LIST_SELECT_SUMMARIZE=0.15,"
                             "ERROR_RECOVERY=0.2,NO_TOOL=0.2 (the default)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["DEFAULT_WEIGHTS", "NAME", "PATTERNS", "build_parser", "cli", "generate", "main", "make_episode",
           "parse_weights", "pattern_plan"]
