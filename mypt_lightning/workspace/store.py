"""The workspace: a small document store with the four tools the agent may call.

``Workspace(docs_dir)`` loads a folder of documents and answers the tool calls of the
wire protocol (docs/design.md section 1)::

    workspace.search(query, top_k=5)        BM25 over title + body, EN/DE aware
    workspace.list_docs([domain], [language])
    workspace.get_doc(doc_id | title)
    workspace.summarize(doc_id | text, [max_sentences])

The same object builds training data (the generators execute every tool call against it,
so each tool result in an episode is what the engine really returns) and serves the
agent at inference. ``call(name, arguments)`` is the tool boundary: it never raises,
errors come back as JSON objects ``{"error": "...", ...}`` as a tool would return them.
The Python methods raise :class:`ToolError` instead, which ``call`` converts.

Folder layout: ``index.json`` (``{"documents": [{"doc_id", "title", "language", "domain",
"file"}]}``) beside the document files. A folder without ``index.json`` is read as every
``*.md``/``*.txt`` file, id = file stem, title = first heading line (or the stem).
Results are deterministic: ties are broken by doc id, scores rounded to 4 decimals.

Confinement: the workspace serves only what is inside its folder. A document (or manifest)
whose real path (symlinks resolved) lies outside the folder, a manifest entry with ``../``
or an absolute path that leads out, a non-regular file (FIFO, socket, device, folder) and a
file over MAX_DOC_BYTES are skipped, each with one ``[mypt] workspace: skipped ...`` line on
stderr (and listed in ``Workspace.skipped``). A document that is not UTF-8 is a
WorkspaceLoadError naming the file and byte offset. Nothing here writes to disk.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mypt_lightning.tokens.episode_schema import EpisodeError
from mypt_lightning.jsonio import loads_strict
from mypt_lightning.workspace.analysis import (
    Decompounder,
    char_ngrams,
    content_words,
    detect_language,
    dice,
    fold,
    split_sentences,
    stem,
)

TOOL_NAMES = ("workspace.search", "workspace.list_docs", "workspace.get_doc", "workspace.summarize")
MAX_TOP_K = 20
MAX_QUERY_CHARS = 500
MAX_SUMMARY_TEXT_CHARS = 50_000
SNIPPET_CHARS = 320
MAX_DOC_BYTES = 10 * 2**20  # a larger file is skipped: the index is built in memory
_DOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# BM25 parameters (Robertson/Sparck Jones defaults) and query-term weights.
K1, B = 1.5, 0.75
TITLE_REPEAT = 2  # title terms count as if they occurred this often in the body
PART_WEIGHT = 0.6  # a compound part found in the query
FUZZY_MIN_SIM, FUZZY_MAX_EXPANSIONS = 0.5, 2  # character-trigram backoff for unknown terms


def default_docs_dir() -> Path:
    """The bundled corpus: ``<repo>/workspace/docs``."""
    return Path(__file__).resolve().parents[2] / "workspace" / "docs"


class ToolError(Exception):
    """A tool-level failure; :meth:`Workspace.call` returns :meth:`to_dict` instead of raising."""

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        return {"error": self.message, **self.details}


class WorkspaceLoadError(ValueError):
    """The document folder is malformed (raised at construction, never from ``call``)."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    language: str
    domain: str
    text: str

    def meta(self) -> dict:
        return {"doc_id": self.doc_id, "title": self.title, "language": self.language, "domain": self.domain}


class _Refused(Exception):
    """A file the workspace must not read (outside the folder, not a regular file, too big)."""


class _Missing(_Refused):
    """A path inside the folder that does not exist (a dangling symlink, a manifest typo)."""


def _read_confined(path: Path, root: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most MAX_DOC_BYTES whose real path
    (symlinks resolved) lies inside the folder ``root`` (a real path); else _Refused."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root:
        raise _Refused(f"resolves to {real}, outside the workspace folder {root}")
    try:
        info = os.stat(real)  # before opening: opening a device can act, a FIFO can block
    except FileNotFoundError:
        raise _Missing("not found") from None
    except OSError as exc:
        raise _Refused(f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _Refused("is not a regular file (a folder, FIFO, socket or device)")
    try:  # O_NOFOLLOW/O_NONBLOCK and fstat: a file swapped meanwhile is refused, never waited on
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _Refused(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Refused("is not a regular file (a folder, FIFO, socket or device)")
        data = handle.read(MAX_DOC_BYTES + 1)
    if max(info.st_size, len(data)) > MAX_DOC_BYTES:
        raise _Refused(f"is larger than the {MAX_DOC_BYTES // 2**20} MB limit of a workspace document")
    return data


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkspaceLoadError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset "
                                 f"{exc.start}); save it as UTF-8") from None


def _load_documents(docs_dir: Path) -> tuple[list[Document], list[str]]:
    """The documents of ``docs_dir`` and a message for every file skipped (outside the folder,
    not a regular file, too big). A non-UTF-8 document is an error, not a skip: dropping a
    document the user listed would silently change what search, generators and gates see."""
    if not docs_dir.is_dir():
        raise WorkspaceLoadError(f"workspace folder {docs_dir} does not exist")
    root = os.path.realpath(docs_dir)
    index_path = docs_dir / "index.json"
    docs: list[Document] = []
    skipped: list[str] = []
    if index_path.is_symlink() or index_path.exists():
        try:
            manifest = loads_strict(_read_confined(index_path, root), str(index_path))
        except (_Refused, EpisodeError) as exc:
            raise WorkspaceLoadError(f"{index_path}: {exc}" if isinstance(exc, _Refused) else str(exc)) from None
        entries = manifest.get("documents") if isinstance(manifest, dict) else None
        if not isinstance(entries, list):
            raise WorkspaceLoadError(f"{index_path}: not a manifest with a 'documents' list")
        listed = set()
        for n, entry in enumerate(entries):
            where = f"{index_path}: documents[{n}]"
            if not isinstance(entry, dict):
                raise WorkspaceLoadError(f"{where}: must be an object")
            missing = [k for k in ("doc_id", "title", "language", "domain", "file") if not isinstance(entry.get(k), str)]
            if missing:
                raise WorkspaceLoadError(f"{where}: missing or non-string field(s) {missing}")
            path = docs_dir / entry["file"]  # an absolute "file" replaces docs_dir: refused below
            listed.add(os.path.normpath(entry["file"]))
            try:  # confinement first: whether a file outside exists is none of the manifest's business
                text = _decode(_read_confined(path, root), path).strip()
            except _Missing:
                raise WorkspaceLoadError(f"{where}: file {entry['file']!r} not found") from None
            except _Refused as exc:
                skipped.append(f"{where}: file {entry['file']!r} {exc}")
                continue
            if not text:
                raise WorkspaceLoadError(f"{where}: file {entry['file']!r} is empty")
            docs.append(Document(entry["doc_id"], entry["title"], entry["language"], entry["domain"], text))
        unlisted = sorted(p.name for p in docs_dir.glob("*.md") if p.name not in listed)
        if unlisted:
            raise WorkspaceLoadError(f"{index_path}: document files not in the manifest: {unlisted}")
    else:
        for path in sorted([*docs_dir.glob("*.md"), *docs_dir.glob("*.txt")]):
            try:
                text = _decode(_read_confined(path, root), path).strip()
            except _Refused as exc:
                skipped.append(f"{path} {exc}")
                continue
            if not text:
                continue
            first = text.splitlines()[0]
            title = first.lstrip("#").strip() if first.startswith("#") else path.stem
            docs.append(Document(path.stem, title, detect_language(text), "general", text))
    for message in skipped:  # one line each, as the project reports other problems it survives
        print(f"[mypt] workspace: skipped {message}", file=sys.stderr)
    if not docs:
        raise WorkspaceLoadError(f"workspace folder {docs_dir} holds no documents"
                                 + (f" ({len(skipped)} skipped)" if skipped else ""))
    seen: set[str] = set()
    for doc in docs:
        if not _DOC_ID_RE.match(doc.doc_id):
            raise WorkspaceLoadError(f"{docs_dir}: invalid doc id {doc.doc_id!r}")
        if doc.doc_id in seen:
            raise WorkspaceLoadError(f"{docs_dir}: duplicate doc id {doc.doc_id!r}")
        seen.add(doc.doc_id)
    return docs, skipped


def result_strings(value) -> list[str]:
    """Every string inside a tool result (nested dicts and lists).

    >>> result_strings({"hits": [{"title": "A", "score": 1.0}], "note": "b"})
    ['A', 'b']
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in result_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in result_strings(v)]
    return []


class Workspace:
    """BM25 search and document tools over a folder of documents. See the module docstring."""

    def __init__(self, docs_dir: str | Path | None = None):
        self.docs_dir = Path(docs_dir) if docs_dir is not None else default_docs_dir()
        self.documents, self.skipped = _load_documents(self.docs_dir)  # skipped: "file why" per refused file
        self._by_id = {d.doc_id: d for d in self.documents}
        self._by_title = {fold(d.title).strip(): d for d in self.documents}
        self._by_folded_id = {fold(d.doc_id): d for d in self.documents}
        # The compound lexicon is every content word of the corpus (titles included).
        lexicon = set()
        for d in self.documents:
            lexicon.update(content_words(d.title + "\n" + d.text))
        self._decompounder = Decompounder(lexicon)
        self._sentences = {d.doc_id: split_sentences(d.text) for d in self.documents}
        self._tf: dict[str, Counter] = {}
        self._len: dict[str, int] = {}
        df: Counter = Counter()
        for d in self.documents:
            tf = Counter(self.analyze(d.text))
            for term in self.analyze(d.title):
                tf[term] += TITLE_REPEAT
            self._tf[d.doc_id] = tf
            self._len[d.doc_id] = sum(tf.values())
            df.update(tf.keys())
        self._df = dict(df)
        self._avgdl = sum(self._len.values()) / len(self.documents)
        self._vocab_ngrams: dict[str, list[str]] = {}
        for term in sorted(self._df):
            if not term.isdigit():
                for gram in char_ngrams(term):
                    self._vocab_ngrams.setdefault(gram, []).append(term)

    # --- analysis ------------------------------------------------------------------------
    def analyze(self, text: str) -> list[str]:
        """Index terms of ``text``: stems of content words plus stems of compound parts."""
        terms = []
        for word in content_words(text):
            terms.append(stem(word))
            parts = self._decompounder.split(word)
            if parts:
                terms.extend(stem(p) for p in parts)
        return terms

    def _query_terms(self, query: str) -> dict[str, float]:
        """Weighted query terms: words 1.0, compound parts PART_WEIGHT, fuzzy backoff by similarity."""
        weights: dict[str, float] = {}

        def add(term: str, w: float) -> None:
            weights[term] = max(weights.get(term, 0.0), w)

        for word in content_words(query):
            add(stem(word), 1.0)
            for part in self._decompounder.split(word) or ():
                add(stem(part), PART_WEIGHT)
        for term, w in list(weights.items()):
            if term in self._df or term.isdigit():
                continue
            # Unknown term (typo, inflection, unseen compound): back off to similar vocabulary terms.
            grams = char_ngrams(term)
            candidates = sorted({t for g in sorted(grams) for t in self._vocab_ngrams.get(g, ())})
            scored = sorted(((dice(grams, char_ngrams(t)), t) for t in candidates), key=lambda x: (-x[0], x[1]))
            for sim, t in scored[:FUZZY_MAX_EXPANSIONS]:
                if sim >= FUZZY_MIN_SIM:
                    add(t, w * sim)
        return weights

    def _idf(self, term: str) -> float:
        n, df = len(self.documents), self._df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _bm25(self, doc_id: str, weights: dict[str, float]) -> float:
        tf, dl = self._tf[doc_id], self._len[doc_id]
        score = 0.0
        for term, w in weights.items():
            f = tf.get(term, 0)
            if f:
                score += w * self._idf(term) * f * (K1 + 1) / (f + K1 * (1 - B + B * dl / self._avgdl))
        return score

    def _snippet(self, doc: Document, weights: dict[str, float]) -> str:
        sentences = self._sentences[doc.doc_id]

        def overlap(sentence: str) -> float:
            present = set(self.analyze(sentence))
            return sum(w * self._idf(t) for t, w in weights.items() if t in present)

        scores = [overlap(s) for s in sentences]
        best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
        snippet = sentences[best]
        if len(snippet) < SNIPPET_CHARS // 2 and best + 1 < len(sentences):
            joined = snippet + " " + sentences[best + 1]
            if len(joined) <= SNIPPET_CHARS:
                snippet = joined
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " ..."
        return snippet

    # --- tools -----------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 5) -> dict:
        """``{"documents": [{"doc_id", "title", "snippet", "score"}]}``, best first; may be empty."""
        if not isinstance(query, str) or not query.strip():
            raise ToolError("empty query", hint="pass a non-empty 'query' string")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError("query too long", max_chars=MAX_QUERY_CHARS, length=len(query))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ToolError("top_k must be an integer from 1 to %d" % MAX_TOP_K, top_k=top_k)
        weights = self._query_terms(query)
        scored = [(self._bm25(d.doc_id, weights), d) for d in self.documents] if weights else []
        ranked = sorted((x for x in scored if x[0] > 0), key=lambda x: (-round(x[0], 4), x[1].doc_id))
        return {
            "documents": [
                {"doc_id": d.doc_id, "title": d.title, "snippet": self._snippet(d, weights), "score": round(s, 4)}
                for s, d in ranked[:top_k]
            ]
        }

    def list_docs(self, domain: str | None = None, language: str | None = None) -> dict:
        """``{"documents": [{"doc_id", "title", "language", "domain"}], "count"}``, optionally filtered."""
        domains = sorted({d.domain for d in self.documents})
        languages = sorted({d.language for d in self.documents})
        if domain is not None and domain not in domains:
            raise ToolError("unknown domain", domain=domain, available=domains)
        if language is not None and language not in languages:
            raise ToolError("unknown language", language=language, available=languages)
        docs = [
            d.meta()
            for d in self.documents
            if (domain is None or d.domain == domain) and (language is None or d.language == language)
        ]
        return {"documents": docs, "count": len(docs)}

    def resolve(self, doc_id_or_title: str) -> Document:
        """The document with this id or title (case/umlaut-insensitive); ToolError with suggestions."""
        if not isinstance(doc_id_or_title, str) or not doc_id_or_title.strip():
            raise ToolError("empty document id", hint="pass 'doc_id' (an id or a title)")
        key = doc_id_or_title.strip()
        doc = self._by_id.get(key) or self._by_folded_id.get(fold(key)) or self._by_title.get(fold(key))
        if doc is not None:
            return doc
        try:
            hits = self.search(key[:MAX_QUERY_CHARS], top_k=3)["documents"]
        except ToolError:
            hits = []
        raise ToolError("document not found", doc_id=key, suggestions=[h["doc_id"] for h in hits])

    def get_doc(self, doc_id_or_title: str) -> dict:
        """``{"doc_id", "title", "language", "domain", "text"}``."""
        doc = self.resolve(doc_id_or_title)
        return {**doc.meta(), "text": doc.text}

    def summarize(self, doc_id_or_text: str | None = None, *, text: str | None = None, max_sentences: int = 3) -> dict:
        """Extractive summary: the most central sentences, in document order.

        ``summarize("pol-travel-en")`` summarizes a document (an id or title);
        ``summarize(text="...")`` summarizes free text.
        """
        if isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or not 1 <= max_sentences <= 10:
            raise ToolError("max_sentences must be an integer from 1 to 10", max_sentences=max_sentences)
        if (doc_id_or_text is None) == (text is None):
            raise ToolError("pass exactly one of 'doc_id' or 'text'")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise ToolError("empty text", hint="pass a non-empty 'text' string")
            if len(text) > MAX_SUMMARY_TEXT_CHARS:
                raise ToolError("text too long", max_chars=MAX_SUMMARY_TEXT_CHARS, length=len(text))
            return {"summary": " ".join(self._central_sentences(split_sentences(text), max_sentences))}
        doc = self.resolve(doc_id_or_text)
        summary = " ".join(self._central_sentences(self._sentences[doc.doc_id], max_sentences))
        return {"doc_id": doc.doc_id, "title": doc.title, "summary": summary}

    def _central_sentences(self, sentences: list[str], k: int) -> list[str]:
        """Score = how many other sentences share the sentence's terms, over sqrt(length), with a
        bonus for the lead sentence and a penalty for questions; the top k in document order."""
        if len(sentences) <= k:
            return sentences
        term_lists = [self.analyze(s) for s in sentences]
        freq = Counter(t for terms in term_lists for t in set(terms))

        def score(i: int) -> float:
            terms = term_lists[i]
            if not terms:
                return 0.0
            base = sum(freq[t] - 1 for t in set(terms)) / math.sqrt(len(terms))
            if sentences[i].rstrip().endswith("?"):
                base *= 0.3  # a question (FAQ heading) summarizes nothing
            return base * (1.5 if i == 0 else 1.0)

        chosen = sorted(sorted(range(len(sentences)), key=lambda i: (-score(i), i))[:k])
        return [sentences[i] for i in chosen]

    # --- the tool boundary -------------------------------------------------------------------
    _SIGNATURES: dict[str, dict[str, tuple[type, ...]]] = {
        "workspace.search": {"query": (str,), "top_k": (int,)},
        "workspace.list_docs": {"domain": (str,), "language": (str,)},
        "workspace.get_doc": {"doc_id": (str,), "title": (str,)},
        "workspace.summarize": {"doc_id": (str,), "text": (str,), "max_sentences": (int,)},
    }
    _REQUIRED = {"workspace.search": ("query",)}

    def call(self, tool_name: Any, arguments: Any = None) -> dict:
        """Execute one tool call; returns the result or an ``{"error": ...}`` object, never raises."""
        if tool_name not in self._SIGNATURES:
            return {"error": "unknown tool", "tool": str(tool_name), "available": list(TOOL_NAMES)}
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return {"error": "bad arguments", "tool": tool_name, "detail": "arguments must be a JSON object"}
        signature = self._SIGNATURES[tool_name]
        unexpected = sorted(str(k) for k in arguments if k not in signature)
        if unexpected:
            return {"error": "bad arguments", "tool": tool_name, "unexpected": unexpected, "allowed": list(signature)}
        for name, value in arguments.items():
            types = signature[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return {
                    "error": "bad arguments",
                    "tool": tool_name,
                    "argument": name,
                    "detail": f"expected {types[0].__name__}, got {type(value).__name__}",
                }
        missing = [name for name in self._REQUIRED.get(tool_name, ()) if name not in arguments]
        if missing:
            return {"error": "bad arguments", "tool": tool_name, "missing": missing}
        try:
            if tool_name == "workspace.search":
                return self.search(arguments["query"], arguments.get("top_k", 5))
            if tool_name == "workspace.list_docs":
                return self.list_docs(arguments.get("domain"), arguments.get("language"))
            if tool_name == "workspace.get_doc":
                if ("doc_id" in arguments) == ("title" in arguments):
                    raise ToolError("pass exactly one of 'doc_id' or 'title'")
                return self.get_doc(arguments.get("doc_id", arguments.get("title")))
            # workspace.summarize
            if ("doc_id" in arguments) == ("text" in arguments):
                raise ToolError("pass exactly one of 'doc_id' or 'text'")
            return self.summarize(
                arguments.get("doc_id"), text=arguments.get("text"), max_sentences=arguments.get("max_sentences", 3)
            )
        except ToolError as err:
            return {**err.to_dict(), "tool": tool_name}
        except Exception as exc:  # a tool must answer; the agent sees the failure instead of a crash
            return {"error": "internal error", "tool": tool_name, "detail": f"{type(exc).__name__}: {exc}"}


__all__ = ["TOOL_NAMES", "Document", "ToolError", "Workspace", "WorkspaceLoadError", "default_docs_dir",
           "result_strings"]
