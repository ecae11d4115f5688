"""Phase 1b context extension: long multi-passage QA episodes from six QA datasets.

The model has no tag knowledge yet, so episodes are plain text replay records
(``{"_replay": true, "text": ...}``, every token trained)::

    Passage 1: <title>
    <text>

    Passage 2: ...

    Question: <question>
    Answer: <answer>

(German sources: "Abschnitt", "Frage", "Antwort".) The gold passage(s) are put at a
seeded, uniformly drawn position among the passages, so the model learns to retrieve
from the beginning, the middle and the end of a 4096-token window; ``_meta.gold_positions``
records where they went. Unanswerable rows (SQuAD v2, MS MARCO "No Answer Present.",
MuSiQue ``answerable: false``) keep their passages and answer that the passages do not
contain the answer. Episodes longer than ``--max_chars`` drop distractors first; long
TriviaQA evidence is cut to a window around the answer.

Sources (``--source NAME=SPEC``, repeatable; SPEC is a local .json/.jsonl/.parquet file or
``hf`` for the default hub dataset, or ``hf:REPO[:CONFIG][:SPLIT]``), read via ``datasets``:

    squad_v2    rajpurkar/squad_v2           id, title, context, question, answers{text, answer_start}
    hotpotqa    hotpotqa/hotpot_qa:distractor  question, answer, supporting_facts{title, sent_id},
                                             context{title, sentences}
    musique     dgslibisey/MuSiQue           id, question, answer, answerable, paragraphs[{idx, title,
                                             paragraph_text, is_supporting}]
    germanquad  deepset/germanquad           id, context, question, answers{text, answer_start}
    msmarco     microsoft/ms_marco:v2.1      query, query_id, answers, wellFormedAnswers,
                                             passages{is_selected, passage_text, url}
    triviaqa    mandarjoshi/trivia_qa:rc     question, question_id, answer{value, aliases},
                                             entity_pages{title, wiki_context}, search_results{title, search_context}

Single-passage sources (SQuAD v2, GermanQuAD) get ``--num_distractors`` passages from other
rows of the same dataset. ``--num_examples`` is split across the sources; in
``--language mixed`` German sources receive ``--de_share`` of it (as far as they have rows:
a shortfall is reported, never hidden).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    build_arg_parser,
    entry_points,
    make_rng,
    replay,
)

NAME = "context_extension"
HUB_DEFAULTS = {
    "squad_v2": ("rajpurkar/squad_v2", None),
    "hotpotqa": ("hotpotqa/hotpot_qa", "distractor"),
    "musique": ("dgslibisey/MuSiQue", None),
    "germanquad": ("deepset/germanquad", None),
    "msmarco": ("microsoft/ms_marco", "v2.1"),
    "triviaqa": ("mandarjoshi/trivia_qa", "rc"),
}
SOURCE_LANGUAGE = {"germanquad": "de"}
LABELS = {"en": ("Passage", "Question", "Answer", "The passages do not contain the answer."),
          "de": ("Abschnitt", "Frage", "Antwort", "Die Abschnitte enthalten die Antwort nicht.")}
TRIVIA_WINDOW = 3000  # characters kept around the answer in a long TriviaQA evidence document


@dataclass
class QAItem:
    """One question with its passages; ``gold`` indexes the passages that hold the answer."""

    uid: str
    question: str
    answer: str | None  # None: unanswerable
    passages: list[tuple[str, str]]  # (title, text)
    gold: list[int]


# ------------------------------------------------------------------------------ converters
def _squad_like(row: dict) -> QAItem:
    texts = list(row.get("answers", {}).get("text", []) or [])
    title = str(row.get("title") or "").replace("_", " ")
    return QAItem(str(row.get("id", "")), row["question"].strip(), texts[0] if texts else None,
                  [(title, row["context"].strip())], [0])


def _hotpotqa(row: dict) -> QAItem:
    ctx = row["context"]
    if isinstance(ctx, dict):  # HF: {"title": [...], "sentences": [[...], ...]}
        paragraphs = list(zip(ctx["title"], ctx["sentences"]))
    else:  # original JSON: [[title, [sentences]], ...]
        paragraphs = [(t, s) for t, s in ctx]
    sf = row.get("supporting_facts") or {}
    gold_titles = set(sf["title"] if isinstance(sf, dict) else [t for t, _ in sf])
    passages = [(t, "".join(s).strip()) for t, s in paragraphs]
    return QAItem(str(row.get("id") or row.get("_id", "")), row["question"].strip(), row["answer"].strip(),
                  passages, [i for i, (t, _) in enumerate(passages) if t in gold_titles])


def _musique(row: dict) -> QAItem:
    paragraphs = row["paragraphs"]
    passages = [(p.get("title", ""), p["paragraph_text"].strip()) for p in paragraphs]
    answerable = row.get("answerable", True)
    return QAItem(str(row.get("id", "")), row["question"].strip(), row["answer"].strip() if answerable else None,
                  passages, [i for i, p in enumerate(paragraphs) if p.get("is_supporting")])


def _msmarco(row: dict) -> QAItem:
    p = row["passages"]
    passages = [(url_title(u), t.strip()) for t, u in zip(p["passage_text"], p.get("url") or [""] * len(p["passage_text"]))]
    well = [a for a in (row.get("wellFormedAnswers") or []) if a and a.strip()]
    answers = [a for a in (row.get("answers") or []) if a and a.strip()]
    answer = (well or answers or [None])[0]
    if answer is not None and answer.strip() == "No Answer Present.":
        answer = None
    return QAItem(str(row.get("query_id", "")), row["query"].strip(), answer, passages,
                  [i for i, s in enumerate(p["is_selected"]) if s])


def url_title(url: str) -> str:
    """A readable title from a URL: its host name."""
    host = url.split("//", 1)[-1].split("/", 1)[0]
    return host.removeprefix("www.")


def _triviaqa(row: dict) -> QAItem:
    answer = row["answer"]
    aliases = [answer["value"], *answer.get("aliases", [])]
    docs = []
    for group, key in (("entity_pages", "wiki_context"), ("search_results", "search_context")):
        g = row.get(group) or {}
        docs.extend(zip(g.get("title", []), g.get(key, [])))
    passages, gold = [], []
    for title, text in docs:
        lowered = text.lower()
        pos = min((lowered.find(a.lower()) for a in aliases if a and a.lower() in lowered), default=-1)
        if pos >= 0:
            start = max(0, pos - TRIVIA_WINDOW // 2)
            window = text[start : start + TRIVIA_WINDOW]
            if start > 0:
                window = window[window.find(" ") + 1 :]
            gold.append(len(passages))
            passages.append((title, window.strip()))
        else:
            passages.append((title, text[:TRIVIA_WINDOW].strip()))
    return QAItem(str(row.get("question_id", "")), row["question"].strip(), answer["value"].strip(), passages, gold)


CONVERTERS = {
    "squad_v2": _squad_like,
    "germanquad": _squad_like,
    "hotpotqa": _hotpotqa,
    "musique": _musique,
    "msmarco": _msmarco,
    "triviaqa": _triviaqa,
}
SINGLE_PASSAGE = ("squad_v2", "germanquad")


# ------------------------------------------------------------------------------ loading
def load_rows(spec: str, name: str):
    """A ``datasets.Dataset`` for a local file or a hub spec (``hf`` / ``hf:REPO[:CONFIG][:SPLIT]``)."""
    import datasets

    if spec == "hf" or spec.startswith("hf:"):
        repo, config = HUB_DEFAULTS[name]
        parts = spec.split(":")[1:]
        repo = parts[0] if parts else repo
        config = parts[1] if len(parts) > 1 and parts[1] else config
        split = parts[2] if len(parts) > 2 else "train"
        return datasets.load_dataset(repo, config, split=split)
    fmt = "parquet" if spec.endswith(".parquet") else "json"
    return datasets.load_dataset(fmt, data_files=spec, split="train")


def parse_source(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or name not in CONVERTERS or not spec:
        raise ValueError(f"--source must be NAME=SPEC with NAME in {sorted(CONVERTERS)}, got {text!r}")
    return name, spec


# ------------------------------------------------------------------------------ assembly
def render(item: QAItem, language: str, rng: random.Random, *, distractors: list[tuple[str, str]],
           max_chars: int) -> tuple[str, list[int], int] | None:
    """(episode text, 1-based gold positions, number of passages); None without a usable gold passage."""
    gold = [item.passages[i] for i in item.gold if item.passages[i][1]]
    if not gold:
        return None
    others = [p for i, p in enumerate(item.passages) if i not in item.gold and p[1]] + distractors
    rng.shuffle(others)
    label_p, label_q, label_a, no_answer = LABELS[language]
    tail = f"\n\n{label_q}: {item.question}\n{label_a}: {item.answer if item.answer is not None else no_answer}"

    def size(ps):
        return sum(len(t) + len(x) + 20 for t, x in ps) + len(tail)

    while others and size(gold + others) > max_chars:
        others.pop()
    if size(gold) > max_chars:
        return None
    # Place the gold passages at uniformly drawn positions among all passages.
    n = len(gold) + len(others)
    slots = sorted(rng.sample(range(n), len(gold)))
    passages, gi, oi = [], 0, 0
    for pos in range(n):
        if gi < len(gold) and pos == slots[gi]:
            passages.append(gold[gi])
            gi += 1
        else:
            passages.append(others[oi])
            oi += 1
    blocks = [f"{label_p} {i}: {title}\n{text}" if title else f"{label_p} {i}:\n{text}"
              for i, (title, text) in enumerate(passages, 1)]
    return "\n\n".join(blocks) + tail, [s + 1 for s in slots], n


def generate(num_examples: int, seed: int, language: str = "mixed", *, sources: list[tuple[str, object]],
             num_distractors: int = 4, max_chars: int = 14000, de_share: float = DEFAULT_DE_SHARE) -> Generated:
    """``sources``: (name, rows) where rows is a datasets.Dataset, a list of dicts, or a SPEC string."""
    if not sources:
        raise ValueError(f"{NAME}: give at least one --source")
    loaded = []
    for name, rows in sources:
        if name not in CONVERTERS:
            raise ValueError(f"{NAME}: unknown source {name!r}; expected one of {sorted(CONVERTERS)}")
        src_lang = SOURCE_LANGUAGE.get(name, "en")
        if language in ("en", "de") and src_lang != language:
            continue
        loaded.append((name, src_lang, load_rows(rows, name) if isinstance(rows, str) else rows))
    if not loaded:
        raise ValueError(f"{NAME}: no source matches --language {language}")
    out = Generated.empty(NAME)
    stats = out.stats
    quotas = _quotas(num_examples, [(n, l, len(r)) for n, l, r in loaded], language, de_share)
    for (name, src_lang, rows), quota in zip(loaded, quotas):
        rng = make_rng(seed, NAME, name)
        order = list(range(len(rows)))
        rng.shuffle(order)
        made = 0
        for idx in order:
            if made >= quota:
                break
            try:
                item = CONVERTERS[name](rows[idx])
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise ValueError(f"{NAME}: {name} row {idx} does not match the {name} schema ({type(exc).__name__}: {exc})") from None
            extra = []
            if name in SINGLE_PASSAGE and num_distractors:
                pool = [j for j in rng.sample(order, min(len(order), num_distractors * 3)) if j != idx]
                seen_ctx = {item.passages[0][1]}
                for j in pool:
                    p = CONVERTERS[name](rows[j]).passages[0]
                    if p[1] not in seen_ctx:
                        extra.append(p)
                        seen_ctx.add(p[1])
                    if len(extra) >= num_distractors:
                        break
            rendered = render(item, src_lang, rng, distractors=extra, max_chars=max_chars)
            if rendered is None:
                stats.reject(f"{name}: no usable gold passage")
                continue
            text, positions, n_passages = rendered
            record = replay(text, language=src_lang, generator=NAME, source=name, id=item.uid,
                            gold_positions=positions, passages=n_passages, answerable=item.answer is not None)
            category = f"{name}/{'answerable' if item.answer is not None else 'unanswerable'}"
            out.add(record, category, f"{name}/{src_lang}")
            made += 1
        if made < quota:
            stats.notes.append(f"{name}: only {made} of {quota} requested episodes (source has {len(rows)} rows)")
    shuffle_rng = make_rng(seed, NAME, "interleave")
    shuffle_rng.shuffle(out.records)
    return out


def _quotas(num: int, sources: list[tuple[str, str, int]], language: str, de_share: float) -> list[int]:
    """Records per source: German sources get ``de_share`` in mixed mode, the rest split evenly."""
    groups: dict[str, list[int]] = {}
    for i, (_, lang, _) in enumerate(sources):
        groups.setdefault(lang, []).append(i)
    totals = {lang: num for lang in groups}
    if language == "mixed" and len(groups) == 2:
        totals = {"de": round(num * de_share), "en": num - round(num * de_share)}
    quotas = [0] * len(sources)
    for lang, members in groups.items():
        base, rest = divmod(totals[lang], len(members))
        for k, i in enumerate(members):
            quotas[i] = base + (1 if k < rest else 0)
    return quotas


def build_parser():
    parser = build_arg_parser(
        "build_context_extension_dataset.py",
        "Phase 1b QA episodes (plain text, gold passage position varied) from SQuAD v2, HotpotQA, MuSiQue, "
        "GermanQuAD, MS MARCO and TriviaQA.",
        default_num=100000,
        epilog=__doc__,
    )
    parser.add_argument("--source", action="append", type=parse_source, required=True, dest="sources",
                        help="NAME=SPEC, repeatable; SPEC is a local .json/.jsonl/.parquet file or hf[:REPO[:CONFIG][:SPLIT]]")
    parser.add_argument("--num_distractors", type=int, default=4,
                        help="extra passages for single-passage sources (SQuAD v2, GermanQuAD; default 4)")
    parser.add_argument("--max_chars", type=int, default=14000,
                        help="longest episode in characters, ~3500 tokens (default 14000)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["CONVERTERS", "HUB_DEFAULTS", "NAME", "QAItem", "build_parser", "cli", "generate", "load_rows", "main",
           "parse_source", "render"]
