"""Text normalisation, stable hashes and a small EN/DE language guess, shared by the
split, dedup, diversity and conversion code so "the same user message" means one thing.

``normalize_loose`` is the key for "same prompt": case, punctuation and whitespace do not
count (``"What is Python?"`` == ``"what is  python"``). ``stable_hash`` is a 64-bit
blake2b digest, identical across processes and runs (Python's ``hash`` is salted).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_space(text: str) -> str:
    """Case-folded, whitespace collapsed, stripped."""
    return _SPACE.sub(" ", text.casefold()).strip()


def normalize_loose(text: str) -> str:
    """Case-folded, NFKC, every run of punctuation/whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def stable_hash(text: str, salt: str = "") -> int:
    """64-bit unsigned hash of ``salt + text``, stable across processes and machines."""
    digest = hashlib.blake2b((salt + text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mix64(values, seed: int):
    """splitmix64 finaliser of ``values ^ seed`` (numpy uint64 array): a seeded permutation key."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = np.asarray(values, dtype=np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_DE_WORDS = frozenset(
    "der die das und ist nicht ein eine einen einem ich du sie wir ihr mit auf für von zu im den dem "
    "des sich auch es wie was wer wo warum bitte kannst können ist sind war wird werden oder aber "
    "noch nur schon über nach bei aus dass wenn dann mir mich dir dich uns euch habe hast hat haben".split()
)
_EN_WORDS = frozenset(
    "the and is are not a an i you he she we they with on for of to in it this that what who where "
    "why please can could would should was were will be or but only already about after at from "
    "if then me my your our have has had do does did how which there their".split()
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def guess_language(text: str) -> str:
    """"de", "en" or "other" from stop-word counts (umlauts/ß tip a tie towards German).
    Good enough for filtering and statistics, not a real language identifier."""
    words = [w.casefold() for w in _WORD.findall(text[:4000])]
    if not words:
        return "other"
    de = sum(w in _DE_WORDS for w in words) + sum(ch in "äöüß" for ch in text[:4000].casefold()) * 0.5
    en = sum(w in _EN_WORDS for w in words)
    if max(de, en) < max(1.0, 0.05 * len(words)):
        return "other"
    return "de" if de > en else "en"
