"""Building tool-use episodes (phases 5 and 6) whose tool results are real.

:class:`ToolSession` appends ``assistant_toolcall`` + ``toolresult`` pairs where the result
is whatever ``Workspace.call`` returns for those arguments (never written by hand), and
checks the final answer: every string the answer relies on (its *support*: an evidence
sentence, a summary, listed titles) must occur in a successful tool result of the episode.
An unsupported episode raises :class:`Unsupported`, and the generator draws another one
(:func:`draw_supported`).
"""

from __future__ import annotations

import random
import re
from typing import Callable, TypeVar

from mypt_lightning.generators.common import GenerationStats, pick_template
from mypt_lightning.generators.general_qa import general_question
from mypt_lightning.generators.qa_bank import Fact
from mypt_lightning.workspace.store import Document, Workspace, result_strings

DOMAIN_NAMES = {
    "en": {"policy": "policy", "setup": "setup guide", "product": "product", "history": "history", "science": "science"},
    "de": {"policy": "Richtlinien", "setup": "Einrichtung", "product": "Produkte", "history": "Geschichte",
           "science": "Wissenschaft"},
}
LANGUAGE_NAMES = {"en": {"en": "English", "de": "German"}, "de": {"en": "englische", "de": "deutsche"}}  # "Es gibt 5 deutsche Dokumente"
SUMMARY_ANSWER = {"en": "Here is a summary of \"{title}\": {summary}", "de": "Zusammenfassung von „{title}“: {summary}"}
MAX_ATTEMPTS = 50  # draws per episode before a generator gives up on its category

_Episode = TypeVar("_Episode")


class Unsupported(Exception):
    """The episode's final answer is not backed by its tool results (or a call failed unexpectedly).

    ``args[0]`` is a short reason (counted in the statistics), further args are details."""

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else "unsupported"


class ToolSession:
    """Messages of one tool-use turn, with every tool call executed against ``workspace``."""

    def __init__(self, workspace: Workspace, user: str, context: str | None = None):
        self.ws = workspace
        first = {"role": "user", "content": user}
        if context:
            first["context"] = context
        self.messages: list[dict] = [first]
        self.results: list[dict] = []
        self.calls: list[tuple[str, dict]] = []

    def call(self, name: str, arguments: dict, think: str | None = None, *, expect_error: bool = False) -> dict:
        msg = {"role": "assistant_toolcall", "name": name, "arguments": dict(arguments)}
        if think:
            msg = {"role": "assistant_toolcall", "think": think, "name": name, "arguments": dict(arguments)}
        result = self.ws.call(name, dict(arguments))
        failed = "error" in result
        if failed != expect_error:
            raise Unsupported(f"{name} {'failed' if failed else 'succeeded'} unexpectedly", arguments, result)
        self.messages.append(msg)
        self.messages.append({"role": "toolresult", "name": name, "content": result})
        self.results.append(result)
        self.calls.append((name, dict(arguments)))
        return result

    def answer(self, content: str, *, support: list[str], think: str | None = None, cite: str | None = None) -> None:
        """The final answer; each ``support`` string must be in a successful tool result."""
        texts = [s for r in self.results if "error" not in r for s in result_strings(r)]
        for needed in support:
            if not any(needed in t for t in texts):
                raise Unsupported("answer not supported by the tool results", needed)
        msg: dict = {"role": "assistant"}
        if think:
            msg["think"] = think
        msg["content"] = content
        if cite:
            msg["cite"] = cite
        self.messages.append(msg)

    def answer_fact(self, fact: Fact, lang: str, rng: random.Random, *, rank: int | None = None) -> int:
        """Answer with ``fact`` (its evidence as support, its document cited) after a think that
        quotes the evidence; returns the think's template index."""
        think, index = fact_think(fact, fact.doc_id, lang, rng, rank=rank)
        self.answer(fact.answer, support=[fact.evidence], think=think, cite=fact.doc_id)
        return index

    def answer_summary(self, doc: Document, summary: str, lang: str) -> None:
        """Answer with the summary the summarize tool returned for ``doc``."""
        self.answer(SUMMARY_ANSWER[lang].format(title=doc.title, summary=summary), support=[summary], cite=doc.doc_id)


def draw_supported(make: Callable[[], _Episode], kind: str, stats: GenerationStats) -> _Episode:
    """``make()`` until it builds an episode its tool results support; each rejection is counted
    in ``stats`` under ``kind``, and ``MAX_ATTEMPTS`` rejections in a row are an error."""
    for _attempt in range(MAX_ATTEMPTS):
        try:
            return make()
        except Unsupported as exc:
            stats.reject(f"{kind}: {exc.reason}")
    raise RuntimeError(f"{stats.generator}: no supported {kind} episode in {MAX_ATTEMPTS} attempts")


def hit(result: dict, doc_id: str) -> tuple[int, dict] | None:
    """(1-based rank, entry) of ``doc_id`` in a search result, or None."""
    for rank, entry in enumerate(result.get("documents", []), 1):
        if entry["doc_id"] == doc_id:
            return rank, entry
    return None


def evidence_rank(result: dict, fact: Fact, reason: str) -> int:
    """The rank of ``fact``'s document in a search result whose snippet holds its evidence;
    raises ``Unsupported(reason)`` when the search did not surface it."""
    found = hit(result, fact.doc_id)
    if found is None or fact.evidence not in found[1]["snippet"]:
        raise Unsupported(reason)
    return found[0]


def question_query(question: str) -> str:
    """A keyword query made from a question: drop the question mark, keep the words."""
    return re.sub(r"[?!.]+$", "", question).strip()


def no_tool_episode(language: str, rng: random.Random, thinks: dict[str, list[str]]) -> tuple[list[dict], str]:
    """A question answered directly; the think (half of the time) says why no tool is needed."""
    question, answer, qid = general_question(language, rng)
    msg: dict = {"role": "assistant", "content": answer}
    template = f"NO_TOOL/{language}/{qid}"
    if rng.random() < 0.5:
        think, ti = pick_template(rng, thinks[language])
        msg = {"role": "assistant", "think": think, "content": answer}
        template += f"/t{ti}"
    return [{"role": "user", "content": question}, msg], template


NO_TOOL_THINKS = {
    "en": ["This is general knowledge; no tool is needed.", "I can answer this directly without the workspace.",
           "No document lookup is necessary for this question."],
    "de": ["Das ist Allgemeinwissen, dafür brauche ich kein Werkzeug.", "Das kann ich direkt beantworten, ohne den Workspace.",
           "Für diese Frage muss ich in keinem Dokument nachsehen."],
}


def fact_think(fact: Fact, doc_id: str, lang: str, rng: random.Random, *, rank: int | None = None) -> tuple[str, int]:
    """The think before a grounded answer: names the source, quotes the evidence."""
    options = {
        "en": [f"The result {doc_id} says: \"{fact.evidence}\"",
               f"{doc_id} answers the question: \"{fact.evidence}\"",
               f"Found it in {doc_id}" + (f" (result {rank})" if rank else "") + f": \"{fact.evidence}\""],
        "de": [f"Das Ergebnis {doc_id} sagt: „{fact.evidence}“",
               f"{doc_id} beantwortet die Frage: „{fact.evidence}“",
               f"Gefunden in {doc_id}" + (f" (Treffer {rank})" if rank else "") + f": „{fact.evidence}“"],
    }[lang]
    return pick_template(rng, options)


def list_answer(result: dict, lang: str, domain: str | None, language: str | None) -> tuple[str, list[str]]:
    """A listing answer written from a list_docs result, and the titles it relies on."""
    docs = result["documents"]
    items = ", ".join(f"{d['title']} ({d['doc_id']})" for d in docs)
    titles = [d["title"] for d in docs]
    if lang == "en":
        what = " ".join(x for x in (LANGUAGE_NAMES["en"].get(language or ""), DOMAIN_NAMES["en"].get(domain or "")) if x)
        return f"There are {len(docs)} {what + ' ' if what else ''}documents: {items}.", titles
    parts = []
    if language:
        parts.append(LANGUAGE_NAMES["de"][language])
    noun = "Dokumente" + (f" zum Thema {DOMAIN_NAMES['de'][domain]}" if domain else "")
    return f"Es gibt {len(docs)} {' '.join(parts + [noun])}: {items}.", titles


__all__ = [
    "DOMAIN_NAMES",
    "MAX_ATTEMPTS",
    "NO_TOOL_THINKS",
    "SUMMARY_ANSWER",
    "ToolSession",
    "Unsupported",
    "draw_supported",
    "evidence_rank",
    "fact_think",
    "hit",
    "list_answer",
    "no_tool_episode",
    "question_query",
]
