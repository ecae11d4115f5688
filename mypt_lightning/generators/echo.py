"""Phase 1 echo: repeat/echo instructions, and anti-echo contrast.

Echo records ask the model to reproduce a payload exactly (plain, quoted, upper/lower
case, twice). Anti-echo records contain a payload too, but ask something ABOUT it (count
its words, give its first or last word, translate it, answer the question instead of
repeating it, tell question from statement): the model must learn that a payload in the
prompt is not an instruction to copy it. ``--anti_echo_share`` sets their share.

Payloads are everyday phrases (EN/DE pairs, so translation has a right answer), names,
numbers and codes; ``--gibberish include`` adds pronounceable nonsense words, which
teach copying of strings the model cannot have memorised.
"""

from __future__ import annotations

import random

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    build_arg_parser,
    check_share,
    entry_points,
    language_plan,
    make_rng,
    pick_template,
    share_plan,
    single_turn,
)
from mypt_lightning.tokens.system_prompts import MINIMAL_SYSTEM_PROMPT

NAME = "echo"

PHRASES = [  # (English, German); all statements except the ones ending in "?"
    ("The weather is nice today.", "Das Wetter ist heute schön."),
    ("I like green tea.", "Ich mag grünen Tee."),
    ("The train leaves at eight.", "Der Zug fährt um acht ab."),
    ("My sister lives in Hamburg.", "Meine Schwester wohnt in Hamburg."),
    ("We need more coffee.", "Wir brauchen mehr Kaffee."),
    ("The meeting starts soon.", "Die Besprechung beginnt bald."),
    ("Please close the window.", "Bitte schließ das Fenster."),
    ("The cat is sleeping.", "Die Katze schläft."),
    ("This book is very old.", "Dieses Buch ist sehr alt."),
    ("The shop opens at nine.", "Der Laden öffnet um neun."),
    ("I am learning German.", "Ich lerne Deutsch."),
    ("The children are playing outside.", "Die Kinder spielen draußen."),
    ("It is raining again.", "Es regnet schon wieder."),
    ("The soup is too hot.", "Die Suppe ist zu heiß."),
    ("He forgot his keys.", "Er hat seine Schlüssel vergessen."),
    ("The bridge is closed.", "Die Brücke ist gesperrt."),
    ("Where is the station?", "Wo ist der Bahnhof?"),
    ("What time is it?", "Wie spät ist es?"),
    ("Can you help me?", "Kannst du mir helfen?"),
    ("Is the museum open today?", "Ist das Museum heute geöffnet?"),
    ("How much does this cost?", "Wie viel kostet das?"),
    ("Do you speak English?", "Sprichst du Englisch?"),
    ("The printer is out of paper.", "Der Drucker hat kein Papier mehr."),
    ("Our team won the game.", "Unser Team hat das Spiel gewonnen."),
    ("The flowers need water.", "Die Blumen brauchen Wasser."),
    ("I will call you tomorrow.", "Ich rufe dich morgen an."),
    ("The lake is frozen.", "Der See ist zugefroren."),
    ("Dinner is ready.", "Das Abendessen ist fertig."),
]
_NAMES = ["Anna Schmidt", "Lukas Becker", "Maria Lopez", "Jonas Weber", "Sofia Rossi", "Emil Nowak",
          "Clara Hoffmann", "Noah Fischer", "Lea Wagner", "Finn O'Brien", "Mia Keller", "Paul Richter"]
_SYLLABLES = ["bla", "zor", "qui", "vex", "tum", "pli", "dra", "fen", "gok", "lir", "mub", "sna", "tef",
              "wol", "kra", "yth", "oon", "ste", "pux", "rim"]
_DIGITS = "0123456789"


def _gibberish(rng: random.Random) -> str:
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 4))]
    return " ".join(words)


def _payload(lang: str, rng: random.Random, gibberish: bool) -> tuple[str, str]:
    """(payload, kind). Phrases follow the record language; other kinds are neutral."""
    kinds = ["phrase", "phrase", "phrase", "name", "number", "code"] + (["gibberish", "gibberish"] if gibberish else [])
    kind = rng.choice(kinds)
    if kind == "phrase":
        en, de = rng.choice(PHRASES)
        return (en if lang == "en" else de), kind
    if kind == "name":
        return rng.choice(_NAMES), kind
    if kind == "number":
        return str(rng.randint(10, 999_999)), kind
    if kind == "code":
        letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(rng.randint(2, 3)))
        return f"{letters}-{''.join(rng.choice(_DIGITS) for _ in range(4))}", kind
    return _gibberish(rng), kind


_ECHO = {
    "en": ["Repeat after me: {p}", "Say exactly this: {p}", "Echo: {p}", "Please repeat: \"{p}\"",
           "Copy my words: {p}", "Repeat this back to me, word for word: {p}", "Type this exactly: {p}"],
    "de": ["Sprich mir nach: {p}", "Sag genau das: {p}", "Echo: {p}", "Wiederhole bitte: \"{p}\"",
           "Wiederhole wörtlich: {p}", "Schreib genau das zurück: {p}", "Gib das exakt wieder: {p}"],
}
_ECHO_TRANSFORM = {  # (template, transform)
    "en": [("Repeat in capital letters: {p}", "upper"), ("Repeat in lowercase: {p}", "lower"),
           ("Say this twice, separated by a space: {p}", "twice")],
    "de": [("Wiederhole in Großbuchstaben: {p}", "upper"), ("Wiederhole in Kleinbuchstaben: {p}", "lower"),
           ("Sag das zweimal, getrennt durch ein Leerzeichen: {p}", "twice")],
}
_ANTI = {
    "word_count": {"en": ["Do not repeat this. How many words does it have? {p}",
                          "Count the words instead of repeating them: {p}",
                          "How many words are in this text: \"{p}\""],
                   "de": ["Nicht wiederholen! Wie viele Wörter hat dieser Text? {p}",
                          "Zähle die Wörter, statt sie zu wiederholen: {p}",
                          "Wie viele Wörter stehen hier: \"{p}\""]},
    "first_word": {"en": ["What is the first word of: {p}", "Give me only the first word of \"{p}\""],
                   "de": ["Was ist das erste Wort von: {p}", "Nenne nur das erste Wort von \"{p}\""]},
    "last_word": {"en": ["What is the last word of: {p}", "Give me only the last word of \"{p}\""],
                  "de": ["Was ist das letzte Wort von: {p}", "Nenne nur das letzte Wort von \"{p}\""]},
    "translate": {"en": ["Translate into German, do not repeat it: {p}", "What is this in German? {p}"],
                  "de": ["Übersetze ins Englische, nicht wiederholen: {p}", "Wie heißt das auf Englisch? {p}"]},
    "answer_not_echo": {"en": ["Don't repeat my question, answer it: What is {a} plus {b}?",
                               "No echo please, just answer: What is {a} plus {b}?"],
                        "de": ["Wiederhole die Frage nicht, sondern beantworte sie: Was ist {a} plus {b}?",
                               "Kein Echo bitte, nur die Antwort: Was ist {a} plus {b}?"]},
    "question_or_statement": {"en": ["Is this a question or a statement? \"{p}\""],
                              "de": ["Ist das eine Frage oder eine Aussage? \"{p}\""]},
}


def _words(text: str) -> list[str]:
    return [w.strip(".,!?\"") for w in text.split() if w.strip(".,!?\"")]


def _echo_record(lang: str, rng: random.Random, gibberish: bool) -> tuple[str, str, str, str]:
    """(prompt, answer, category, template) for an echo instruction."""
    payload, kind = _payload(lang, rng, gibberish)
    if rng.random() < 0.25:
        (tpl, how), i = pick_template(rng, _ECHO_TRANSFORM[lang])
        answer = {"upper": payload.upper(), "lower": payload.lower(), "twice": f"{payload} {payload}"}[how]
        return tpl.format(p=payload), answer, "echo_transform", f"echo_transform/{lang}/t{i}/{kind}"
    tpl, i = pick_template(rng, _ECHO[lang])
    return tpl.format(p=payload), payload, "echo", f"echo/{lang}/t{i}/{kind}"


def _anti_record(lang: str, rng: random.Random, gibberish: bool) -> tuple[str, str, str, str]:
    task = rng.choice(list(_ANTI))
    tpl, i = pick_template(rng, _ANTI[task][lang])
    if task == "answer_not_echo":
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        return tpl.format(a=a, b=b), str(a + b), "anti_echo", f"anti_echo/{lang}/{task}{i}"
    if task in ("translate", "question_or_statement"):
        en, de = rng.choice(PHRASES)
        source, target = (en, de) if lang == "en" else (de, en)
        if task == "translate":
            answer = target
        else:
            is_q = source.endswith("?")
            answer = ("A question." if is_q else "A statement.") if lang == "en" else ("Eine Frage." if is_q else "Eine Aussage.")
        return tpl.format(p=source), answer, "anti_echo", f"anti_echo/{lang}/{task}{i}/phrase"
    while True:  # a one-word payload would make "first word" the same as echo: no contrast
        payload, kind = _payload(lang, rng, gibberish)
        words = _words(payload)
        if len(words) >= 2:
            break
    if task == "word_count":
        answer = str(len(words))
    else:
        answer = words[0] if task == "first_word" else words[-1]
    return tpl.format(p=payload), answer, "anti_echo", f"anti_echo/{lang}/{task}{i}/{kind}"


def generate(num_examples: int, seed: int, language: str = "mixed", *, gibberish: str = "exclude",
             anti_echo_share: float = 0.4, de_share: float = DEFAULT_DE_SHARE) -> Generated:
    if gibberish not in ("include", "exclude"):
        raise ValueError(f"gibberish must be 'include' or 'exclude', got {gibberish!r}")
    check_share("anti_echo_share", anti_echo_share)
    use_gib = gibberish == "include"
    rng = make_rng(seed, NAME)
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    anti_flags = share_plan(num_examples, anti_echo_share, make_rng(seed, NAME, "kinds"))
    out = Generated.empty(NAME)
    for lang, anti in zip(plan, anti_flags):
        make = _anti_record if anti else _echo_record
        prompt, answer, category, template = make(lang, rng, use_gib)
        out.add_episode(MINIMAL_SYSTEM_PROMPT, single_turn(prompt, answer), lang, category=category, template=template)
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_echo_dataset.py",
        "Phase 1 echo and anti-echo instructions (EN/DE MyPT JSONL episodes).",
        default_num=8000,
        epilog=__doc__,
    )
    parser.add_argument("--gibberish", choices=("include", "exclude"), default="exclude",
                        help="also use nonsense-word payloads (default exclude)")
    parser.add_argument("--anti_echo_share", type=float, default=0.4,
                        help="share of anti-echo records (default 0.4)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["NAME", "PHRASES", "build_parser", "cli", "generate", "main"]
