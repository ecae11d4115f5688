"""Diversity of an episode set: distinct n-grams, template signatures, language mix.

    distinct-n     distinct word n-grams / all word n-grams, separately for user and
                   assistant text (1.0 = no repetition; templated data scores low)
    signatures     a user message with numbers, quoted spans and capitalised words (after
                   the first) replaced by placeholders, cut to its first 8 words: how many
                   distinct ones, and the share of the most common
    languages      the records' ``language`` field (else a stop-word guess)
    structures     the sequence of roles, e.g. user>assistant_toolcall>toolresult>assistant
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

from .textnorm import guess_language, stable_hash

_WORDS = re.compile(r"\w+", re.UNICODE)
_QUOTED = re.compile(r"\"[^\"]*\"|„[^“]*“|'[^']*'|«[^»]*»|`[^`]*`")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def signature(text: str, words: int = 8) -> str:
    """Template signature of a user message (see the module docstring)."""
    text = _NUMBER.sub("<N>", _QUOTED.sub("<Q>", text))
    tokens = text.split()
    out = []
    for i, token in enumerate(tokens[:words]):
        if token.startswith(("<N>", "<Q>")):
            out.append(token)
        else:
            out.append("<W>" if i > 0 and token[:1].isupper() and token[1:2].islower() else token.lower())
    return " ".join(out)


class _Distinct:
    def __init__(self, n: int):
        self.n, self.total, self.seen = n, 0, set()

    def add(self, words: list[str]) -> None:
        for i in range(len(words) - self.n + 1):
            self.total += 1
            self.seen.add(stable_hash(" ".join(words[i:i + self.n])))

    def value(self) -> float:
        return len(self.seen) / self.total if self.total else 0.0


def analyze(records: Iterable[tuple[str, dict]], top: int = 10) -> dict[str, Any]:
    distinct = {role: {n: _Distinct(n) for n in (1, 2, 3)} for role in ("user", "assistant")}
    signatures: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    structures: Counter[str] = Counter()
    user_texts: Counter[int] = Counter()
    episodes = replay = 0
    lengths = {"user": 0, "assistant": 0}
    counts = {"user": 0, "assistant": 0}
    for _, record in records:
        episodes += 1
        if record.get("_replay") is True:
            replay += 1
            languages[record.get("language") or guess_language(record["text"])] += 1
            structures["replay"] += 1
            continue
        texts = {"user": [], "assistant": []}
        for m in record["messages"]:
            if m["role"] in texts:
                texts[m["role"]].append(m["content"])
        structures[">".join(m["role"] for m in record["messages"])] += 1
        languages[record.get("language") or guess_language(" ".join(texts["user"] + texts["assistant"]))] += 1
        for role, items in texts.items():
            for text in items:
                words = _WORDS.findall(text.casefold())
                for d in distinct[role].values():
                    d.add(words)
                lengths[role] += len(text)
                counts[role] += 1
        for text in texts["user"]:
            signatures[signature(text)] += 1
            user_texts[stable_hash(" ".join(text.casefold().split()))] += 1
    total_users = sum(user_texts.values())
    return {
        "episodes": episodes,
        "replay": replay,
        "distinct_n": {role: {f"distinct_{n}": round(d.value(), 4) for n, d in ds.items()} for role, ds in distinct.items()},
        "user_messages": total_users,
        "distinct_user_messages": len(user_texts),
        "repeated_user_message_share": round(1 - len(user_texts) / total_users, 4) if total_users else 0.0,
        "mean_chars": {r: round(lengths[r] / counts[r], 1) if counts[r] else 0.0 for r in lengths},
        "template_signatures": {"distinct": len(signatures),
                                "top": [{"signature": s, "count": c, "share": round(c / total_users, 4)}
                                        for s, c in signatures.most_common(top)]},
        "languages": dict(languages.most_common()),
        "structures": dict(structures.most_common(top)),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"episodes: {report['episodes']} ({report['replay']} replay)",
             "languages: " + ", ".join(f"{k} {v} ({v / max(report['episodes'], 1):.0%})"
                                       for k, v in report["languages"].items())]
    for role, values in report["distinct_n"].items():
        lines.append(f"{role:<9} distinct-1/2/3: " + " / ".join(f"{v:.3f}" for v in values.values())
                     + f"   mean {report['mean_chars'][role]:.0f} chars")
    lines.append(f"user messages: {report['user_messages']}, distinct {report['distinct_user_messages']} "
                 f"(repeated share {report['repeated_user_message_share']:.1%})")
    sig = report["template_signatures"]
    lines.append(f"template signatures: {sig['distinct']} distinct; most common:")
    lines += [f"  {t['share']:>6.1%}  {t['count']:>7}  {t['signature']}" for t in sig["top"]]
    lines.append("structures:")
    lines += [f"  {n:>7}  {s}" for s, n in report["structures"].items()]
    return "\n".join(lines)
