"""Text analysis for the workspace search engine (EN + DE), and small text helpers.

The pipeline that turns text into index terms::

    "Übernachtungskosten für Reisen"            raw text
      -> fold      "uebernachtungskosten fuer reisen"   (case, umlauts: ä=ae, ß=ss, accents)
      -> words     ["uebernachtungskosten", "fuer", "reisen"]
      -> stopwords ["uebernachtungskosten", "reisen"]
      -> stem      ["uebernachtungskost", "reis"]
      -> compounds + ["uebernachtung", "kost"]  (parts found in the corpus lexicon)

Folding makes "Übersicht", "Uebersicht" and "UBERSICHT"... almost equal: ``ü`` and ``ue``
fold to the same string, so a user who types without umlauts still finds the document.
The stemmer is deliberately light (strip a few EN/DE inflection suffixes): over-stemming
merges unrelated words, which hurts a small corpus more than a missed inflection.
German compounds are split against the corpus vocabulary with the usual linking
elements (Fugen-s etc.), so "Urlaubsantrag" matches a document about "Urlaub" and
"Antrag", and a document about "Homeoffice-Pauschale" matches "Homeofficepauschale".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ẞ": "ss"})
# Numbers keep their digit groups together: "1.500" -> "1500", "4.2" -> "42".
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+")

STOPWORDS_EN = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each else few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with
    would you your yours tell please much many does""".split()
)
STOPWORDS_DE = frozenset(
    """aber alle allem allen aller alles als also am an ander andere anderen auch auf aus bei
    beim bin bis bist da damit dann das dass dein deine dem den denn der des dessen die dies
    diese diesem diesen dieser dieses doch dort du durch ein eine einem einen einer eines er es
    etwa euch euer fuer gegen gibt hab habe haben hat hatte hier hin ich ihm ihn ihnen ihr ihre
    im in ins ist ja jede jedem jeden jeder jedes kann kein keine koennen man mehr mein meine mich
    mir mit muss nach nicht nichts noch nun nur ob oder ohne sehr sein seine sich sie sind so
    sollte sondern sowie ueber um und uns unser unter viel vom von vor war waren was weil welche
    welcher welches wenn wer werden wie wieder will wir wird wo wurde wurden zu zum zur zwischen
    wann wieviel viele""".split()
)
STOPWORDS = STOPWORDS_EN | STOPWORDS_DE

# Suffixes stripped by the light stemmer, longest first. A stem keeps >= 4 characters.
_SUFFIXES = ("ings", "ing", "ern", "ed", "en", "er", "es", "em", "e", "s", "n")
_LINKS = ("es", "en", "er", "s", "n", "e")  # German linking elements (Fugen) between parts
_MIN_PART = 4
_MIN_COMPOUND = 8


def fold(text: str) -> str:
    """Lower-case, ``ä``->``ae`` (etc.), ``ß``->``ss``, strip remaining accents."""
    text = unicodedata.normalize("NFC", text).lower().translate(_UMLAUTS)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """Folded word and number tokens of ``text`` (stopwords kept)."""
    return [re.sub(r"[.,]", "", tok) for tok in _TOKEN_RE.findall(fold(text))]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Light EN/DE suffix stripping on a folded word: ``richtlinien`` -> ``richtlini``."""
    if word.isdigit() or len(word) <= 4:
        return word
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    if word.endswith("ungen"):  # Richtungen -> richtung, same stem as the singular
        return word[:-2]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """Folded tokens without stopwords (numbers kept)."""
    return [w for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


class Decompounder:
    """Splits long folded words into parts that occur as words of their own in a lexicon.

    >>> d = Decompounder(["urlaub", "antrag", "reise", "kosten"])
    >>> d.split("urlaubsantrag")
    ['urlaub', 'antrag']
    >>> d.split("reisekosten")
    ['reise', 'kosten']
    >>> d.split("antrag") is None
    True
    """

    def __init__(self, lexicon: Iterable[str]):
        self._lexicon = frozenset(w for w in lexicon if len(w) >= _MIN_PART - 1 and not w.isdigit())
        self._stems = frozenset(stem(w) for w in self._lexicon)
        self._cache: dict[str, list[str] | None] = {}

    def _known(self, part: str) -> bool:
        return len(part) >= _MIN_PART - 1 and (part in self._lexicon or stem(part) in self._stems)

    def _base(self, head: str) -> str:
        """"urlaubs" -> "urlaub" when the head carries a linking element."""
        for link in _LINKS:
            if head.endswith(link) and head[: -len(link)] in self._lexicon:
                return head[: -len(link)]
        return head

    def split(self, word: str) -> list[str] | None:
        if len(word) < _MIN_COMPOUND or not word.isalpha():
            return None
        if word in self._cache:
            return self._cache[word]
        result = None
        # Longest head first: "reisekostenrichtlinie" -> "reisekosten" + "richtlinie" before "reise" + ...
        for i in range(len(word) - (_MIN_PART - 1), _MIN_PART - 1, -1):
            head = word[:i]
            if len(head) < _MIN_PART or not self._known(head):
                continue
            rest = word[i:]
            tails = [rest] + [rest[len(link):] for link in _LINKS if rest.startswith(link)]
            for tail in tails:
                if self._known(tail):
                    result = [self._base(head), tail]
                    break
                sub = self.split(tail)
                if sub:
                    result = [self._base(head), *sub]
                    break
            if result:
                break
        self._cache[word] = result
        return result


def char_ngrams(term: str, n: int = 3) -> frozenset[str]:
    padded = f"#{term}#"
    return frozenset(padded[i : i + n] for i in range(max(1, len(padded) - n + 1)))


def dice(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


# --- sentences -----------------------------------------------------------------------------

_ABBREVIATIONS = frozenset(
    "dr prof nr st ca bzw usw vgl z b d h etc e g i e mr mrs ms no fig abs art".split()
)
_SENTENCE_END = re.compile(r"[.!?]['\")\]]?\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, paragraph-aware; keeps "7. Dezember", "Dr. Brandt", "1. Unpack" whole."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            before = paragraph[start : match.start()].rsplit(" ", 1)[-1].rstrip(".").lower()
            if before.isdigit() and len(before) <= 2:
                continue  # German ordinal or list number: "am 7. Dezember", "1. Unpack"
            if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()):
                continue
            nxt = paragraph[match.end() : match.end() + 1]
            if nxt and not (nxt.isupper() or nxt.isdigit() or nxt in "\"'(„"):
                continue
            sentences.append(paragraph[start : match.end()].strip())
            start = match.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def detect_language(text: str) -> str:
    """'de' or 'en' by stopword counts (ties and empty text: 'en'); umlauts count for German."""
    toks = words(text)
    de = sum(1 for t in toks if t in STOPWORDS_DE and t not in STOPWORDS_EN)
    en = sum(1 for t in toks if t in STOPWORDS_EN and t not in STOPWORDS_DE)
    de += sum(1 for ch in text if ch in "äöüÄÖÜß") * 0.5
    return "de" if de > en else "en"


__all__ = [
    "STOPWORDS",
    "STOPWORDS_DE",
    "STOPWORDS_EN",
    "Decompounder",
    "char_ngrams",
    "content_words",
    "detect_language",
    "dice",
    "fold",
    "split_sentences",
    "stem",
    "words",
]
