"""Rule-based paraphrase of user messages (English and German), for augmentation.

Each rule is a phrase with interchangeable alternatives ("Can you" / "Could you" /
"Would you"); a paraphrase swaps one or more phrases that occur in the message, keeps the
case of the first letter, and may add or drop a polite "Please"/"Bitte" or a closing
"Thanks!"/"Danke!". Quoted spans ("...", „...“, '...', `...`) and code blocks are never
touched, so an operator's payload survives verbatim. Assistant messages are not changed:
the answer stays correct.

``augment_to_target`` adds paraphrased copies until the file has ``target_count`` records;
``diversify`` rewrites user messages in place. Both mark what they did in ``_meta``
(``augmented``, ``paraphrase_of``); ``paraphrase_of`` is shared by an original and all its
copies, so ``prepare_sft --split_by_field _meta.paraphrase_of`` keeps a family in one split.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Iterable

from .textnorm import guess_language, stable_hash

_SYNONYMS = {
    "en": [
        ["can you", "could you", "would you"],
        ["what is", "what's"],
        ["explain", "describe", "tell me about"],
        ["how do i", "how can i"],
        ["i want to know", "i'd like to know", "i would like to know"],
        ["give me", "provide", "show me"],
        ["briefly", "in short", "in a few words"],
        ["list", "name"],
        ["answer", "reply"],
        ["help me", "assist me"],
        ["quickly", "fast"],
        ["write", "compose"],
        ["repeat", "echo back"],
        ["summarize", "sum up"],
    ],
    "de": [
        ["kannst du", "könntest du", "würdest du"],
        ["können sie", "könnten sie"],
        ["erkläre", "erkläre mir", "beschreibe"],
        ["was ist", "was genau ist"],
        ["wie kann ich", "auf welche weise kann ich"],
        ["ich möchte wissen", "ich würde gerne wissen"],
        ["gib mir", "nenne mir", "zeig mir"],
        ["kurz", "knapp", "in wenigen worten"],
        ["schreibe", "verfasse"],
        ["wiederhole", "gib wieder"],
        ["fasse zusammen", "fasse kurz zusammen"],
        ["antworte", "antwort bitte"],
        ["hilf mir", "unterstütze mich"],
    ],
}
_POLITE = {"en": ("Please ", " Thanks!", " Thank you."), "de": ("Bitte ", " Danke!", " Vielen Dank.")}
_PROTECTED = re.compile(r"```.*?```|\"[^\"\n]*\"|„[^“\n]*“|'[^'\n]*'|`[^`\n]*`|«[^»\n]*»", re.S)


def _rules(language: str) -> list[tuple[re.Pattern, list[str]]]:
    out = []
    for group in _SYNONYMS[language]:
        for phrase in group:
            pattern = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", re.IGNORECASE)
            out.append((pattern, [p for p in group if p != phrase]))
    return out


_RULES = {lang: _rules(lang) for lang in _SYNONYMS}


def _match_case(original: str, replacement: str) -> str:
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _swap_phrases(text: str, language: str, rng: random.Random) -> str:
    """Replace a random non-empty subset of the phrases found outside protected spans."""
    protected = [(m.start(), m.end()) for m in _PROTECTED.finditer(text)]

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in protected)

    hits = []
    taken: list[tuple[int, int]] = []
    for pattern, alternatives in _RULES[language]:
        for m in pattern.finditer(text):
            span = (m.start(), m.end())
            if free(*span) and all(span[1] <= s or span[0] >= e for s, e in taken):
                hits.append((span, alternatives))
                taken.append(span)
    if not hits:
        return text
    chosen = rng.sample(hits, rng.randint(1, len(hits)))
    for (a, b), alternatives in sorted(chosen, key=lambda h: -h[0][0]):
        text = text[:a] + _match_case(text[a:b], rng.choice(alternatives)) + text[b:]
    return text


def _politeness(text: str, language: str, rng: random.Random) -> str:
    please, *closings = _POLITE[language]
    stripped = text.rstrip()
    if text.startswith(please):
        return text[len(please):][:1].upper() + text[len(please) + 1:]
    if any(stripped.endswith(c.strip()) for c in closings):
        for c in closings:
            if stripped.endswith(c.strip()):
                return stripped[: -len(c.strip())].rstrip()
    if rng.random() < 0.5 and text[:1].isupper() and not stripped.endswith("?") and not _PROTECTED.match(text):
        return please + text[:1].lower() + text[1:]
    return stripped + rng.choice(closings)


def paraphrase(text: str, language: str | None = None, rng: random.Random | None = None) -> str:
    """A paraphrase of ``text`` that differs from it (the text itself when no rule applies)."""
    rng = rng or random.Random(0)
    language = language if language in _RULES else guess_language(text)
    if language not in _RULES:
        language = "en"
    out = _swap_phrases(text, language, rng)
    if out == text or rng.random() < 0.3:
        out = _politeness(out, language, rng)
    return out


def family_id(record: dict) -> str:
    """Id shared by a record and its paraphrases (hash of its first user message)."""
    meta = record.get("_meta") or {}
    if "paraphrase_of" in meta:
        return str(meta["paraphrase_of"])
    first = next((m["content"] for m in record.get("messages", []) if m["role"] == "user"), record.get("text", ""))
    return f"p{stable_hash(first):016x}"


def paraphrase_record(record: dict, rng: random.Random, how: str = "paraphrase") -> dict | None:
    """Copy of ``record`` with paraphrased user messages, or None if nothing changed."""
    if record.get("_replay") is True:
        return None
    out = copy.deepcopy(record)
    changed = False
    language = record.get("language")
    for m in out["messages"]:
        if m["role"] == "user":
            new = paraphrase(m["content"], language, rng)
            changed |= new != m["content"]
            m["content"] = new
    if not changed:
        return None
    meta = out.setdefault("_meta", {})
    meta["augmented"] = how
    meta["paraphrase_of"] = family_id(record)
    return out


def _user_signature(record: dict) -> int:
    return stable_hash("\x1f".join(m["content"] for m in record.get("messages", []) if m["role"] == "user")
                       or record.get("text", ""))


def augment_to_target(records: list[dict], target_count: int, seed: int = 0, max_tries: int = 20
                      ) -> tuple[list[dict], dict[str, int]]:
    """Originals (tagged with their family id) followed by distinct paraphrased copies until
    ``target_count`` records; stops early (and says so) when the rules run out of variants."""
    rng = random.Random(seed)
    out = []
    seen = set()
    for record in records:
        r = copy.deepcopy(record)
        if r.get("_replay") is not True:
            r.setdefault("_meta", {})["paraphrase_of"] = family_id(record)
        out.append(r)
        seen.add(_user_signature(r))
    stats = {"originals": len(records), "added": 0, "failed_tries": 0}
    candidates = [r for r in records if r.get("_replay") is not True]
    tries = 0
    while len(out) < target_count and candidates and tries < max_tries * max(target_count, 1):
        tries += 1
        variant = paraphrase_record(rng.choice(candidates), rng)
        if variant is None or _user_signature(variant) in seen:
            stats["failed_tries"] += 1
            continue
        seen.add(_user_signature(variant))
        out.append(variant)
        stats["added"] += 1
    stats["shortfall"] = max(0, target_count - len(out))
    return out, stats


def diversify(records: Iterable[dict], probability: float = 0.5, seed: int = 0
              ) -> Iterable[tuple[dict, bool]]:
    """Each record, with its user messages paraphrased with ``probability``; (record, changed)."""
    rng = random.Random(seed)
    for record in records:
        if rng.random() < probability:
            variant = paraphrase_record(record, rng, how="diversified")
            if variant is not None:
                yield variant, True
                continue
        yield record, False
