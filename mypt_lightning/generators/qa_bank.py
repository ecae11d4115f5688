"""Grounded facts about the workspace documents, shared by the phase 3-6 generators.

``workspace/docs/questions.jsonl`` holds hand-written question/answer pairs, one line each::

    {"doc_id": "pol-travel-en", "topic": "hotel costs", "question": "...", "answer": "...",
     "evidence": "exact substring of the document", "query": "search keywords"}

``evidence`` must occur verbatim in the document: it is what makes an answer *grounded*.
The generators check it against what a tool returned (phase 5-6) or against the context
they put in front of the model (phase 3-4), so an answer is never trained without its
support in view. ``load_facts`` refuses a bank whose evidence is not in its document.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mypt_lightning.data_prep.jsonl import iter_lines, parse_line
from mypt_lightning.workspace.store import Document, Workspace
from mypt_lightning.workspace.analysis import split_sentences

QUESTION_BANK = "questions.jsonl"


@dataclass(frozen=True)
class Fact:
    doc_id: str
    language: str
    topic: str
    question: str
    answer: str
    evidence: str
    query: str

    @property
    def topic_bare(self) -> str:
        """The topic without a leading German article ("die Kernarbeitszeit" -> "Kernarbeitszeit")."""
        for article in ("der ", "die ", "das ", "the "):
            if self.topic.startswith(article):
                rest = self.topic[len(article):]
                return rest[:1].upper() + rest[1:] if self.language == "de" else rest
        return self.topic

    def fill(self, template: str, **fields) -> str:
        """``template`` filled with this fact's {topic}, {topic_bare}, {q}, {a}, {doc_id} and
        {evidence}; ``fields`` add to or override them."""
        return template.format(**{"topic": self.topic, "topic_bare": self.topic_bare, "q": self.question,
                                  "a": self.answer, "doc_id": self.doc_id, "evidence": self.evidence, **fields})


def load_facts(workspace: Workspace, path: str | Path | None = None) -> list[Fact]:
    """The question bank of ``workspace`` (default ``<docs_dir>/questions.jsonl``), checked."""
    path = Path(path) if path is not None else workspace.docs_dir / QUESTION_BANK
    if not path.is_file():
        raise FileNotFoundError(f"question bank {path} not found (needed by the phase 3-6 generators)")
    facts = []
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        row = parse_line(line, where, validate=False)  # an EpisodeError is a ValueError too
        missing = [k for k in ("doc_id", "topic", "question", "answer", "evidence", "query")
                   if not isinstance(row.get(k), str) or not row[k]]
        if missing:
            raise ValueError(f"{where}: missing or non-string field(s) {missing}")
        doc = next((d for d in workspace.documents if d.doc_id == row["doc_id"]), None)
        if doc is None:
            raise ValueError(f"{where}: doc_id {row['doc_id']!r} is not in the workspace")
        if row["evidence"] not in doc.text:
            raise ValueError(f"{where}: evidence is not a verbatim substring of {doc.doc_id}")
        facts.append(Fact(doc.doc_id, doc.language, row["topic"], row["question"], row["answer"],
                          row["evidence"], row["query"]))
    if not facts:
        raise ValueError(f"question bank {path} is empty")
    return facts


def facts_by_language(facts: list[Fact]) -> dict[str, list[Fact]]:
    out: dict[str, list[Fact]] = {}
    for f in facts:
        out.setdefault(f.language, []).append(f)
    return out


def facts_by_doc(facts: list[Fact]) -> dict[str, list[Fact]]:
    out: dict[str, list[Fact]] = {}
    for f in facts:
        out.setdefault(f.doc_id, []).append(f)
    return out


def passage(doc: Document, evidence: str, rng: random.Random, *, before: int = 1, after: int = 1) -> str:
    """Up to ``before``/``after`` random sentences around the sentence holding ``evidence``.

    Falls back to the whole paragraph when the evidence crosses a sentence boundary.
    The result always contains ``evidence`` verbatim.
    """
    sentences = split_sentences(doc.text)
    hit = next((i for i, s in enumerate(sentences) if evidence in s), None)
    if hit is None:
        paragraph = next(p for p in doc.text.split("\n\n") if evidence in " ".join(p.split()) or evidence in p)
        return " ".join(paragraph.split())
    lo = max(0, hit - rng.randint(0, before))
    hi = min(len(sentences), hit + 1 + rng.randint(0, after))
    text = " ".join(sentences[lo:hi])
    if evidence not in text:  # whitespace normalisation changed the evidence: use the raw paragraph
        return next(p for p in doc.text.split("\n\n") if evidence in p).strip()
    return text


def format_context(doc: Document, text: str) -> str:
    """How a passage is shown to the model: ``[doc_id] Title`` line, then the text."""
    return f"[{doc.doc_id}] {doc.title}\n{text}"


__all__ = ["Fact", "QUESTION_BANK", "facts_by_doc", "facts_by_language", "format_context", "load_facts", "passage"]
