"""Which language an answer is in: a stopword heuristic, good enough for EN vs DE.

Built on the workspace's stopword lists (``workspace_analysis``), plus the short words
that make up one-word answers ("Ja.", "Nein", "Hallo!", "Danke" / "Yes", "Hello"), so
"Ja." counts as German. Returns None when there is no evidence either way ("Berlin",
"42"): a gate then does not hold the answer's language against it.

>>> language_of("Die Hauptstadt ist Berlin.")
'de'
>>> language_of("The capital is Berlin.")
'en'
>>> language_of("Berlin") is None, language_of("A") is None
(True, True)
"""

from __future__ import annotations

from mypt_lightning.workspace.analysis import STOPWORDS_DE, STOPWORDS_EN, words

_SHORT_EN = frozenset("yes no hello hi thanks thank goodbye bye okay sure please morning good luck welcome".split())
_SHORT_DE = frozenset("ja nein hallo danke tschuess bitte guten morgen glueck gerne genau stimmt viel wiedersehen servus moin".split())
_EN = (STOPWORDS_EN | _SHORT_EN) - STOPWORDS_DE
_DE = (STOPWORDS_DE | _SHORT_DE) - STOPWORDS_EN


def language_scores(text: str) -> tuple[float, float]:
    """(English evidence, German evidence): counts of language-specific words; umlauts and ß
    add to German."""
    toks = [t for t in words(text) if len(t) > 1]  # "A" is a letter ("first letter of 'Hund'?"), not English
    en = sum(1 for t in toks if t in _EN)
    de = sum(1 for t in toks if t in _DE)
    de += 0.5 * sum(1 for ch in text if ch in "äöüÄÖÜß")
    return float(en), float(de)


def language_of(text: str, margin: float = 0.5) -> str | None:
    """'en', 'de', or None when neither side leads by more than ``margin``."""
    en, de = language_scores(text)
    if de - en > margin:
        return "de"
    if en - de > margin:
        return "en"
    return None


def same_language(text: str, expected: str) -> bool:
    """True unless ``text`` is recognisably in another language than ``expected``."""
    found = language_of(text)
    return found is None or found == expected


__all__ = ["language_of", "language_scores", "same_language"]
