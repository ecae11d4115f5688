"""Phase 1 format lock: combinatorial short Q&A whose answers are 1-5 tokens.

The model learns the skeleton ``<myPT_system>..<myPT_user>..<myPT_assistant>ANSWER
</myPT_assistant><myPT_eot>`` and to stop right after a short answer. A user prompt is
``prefix + question template + suffix`` in one of a few surface styles; the question comes
from a category (capitals, colours, opposites, translations, weekdays, months, yes/no
facts, letters, counting, greetings, and arithmetic unless ``--math exclude``).

``--mode full`` uses every prefix/suffix/style combination; ``--mode simple`` only the bare
question templates (fewer distinct prompts, the same answers). Every answer is checked
with the real tokenizer to be 1-5 tokens; longer ones are a data bug and stop the run.
"""

from __future__ import annotations

import random

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    build_arg_parser,
    entry_points,
    language_plan,
    make_rng,
    pick_template,
    single_turn,
)
from mypt_lightning.tokens.system_prompts import MINIMAL_SYSTEM_PROMPT

NAME = "format_lock"
MODES = ("full", "simple")
MAX_ANSWER_TOKENS = 5

# ---------------------------------------------------------------------------- the facts
# Each category: list of (EN subject, EN answer, DE subject, DE answer).
_CAPITALS = [
    ("Germany", "Berlin", "Deutschland", "Berlin"), ("France", "Paris", "Frankreich", "Paris"),
    ("Italy", "Rome", "Italien", "Rom"), ("Spain", "Madrid", "Spanien", "Madrid"),
    ("Austria", "Vienna", "Österreich", "Wien"), ("Poland", "Warsaw", "Polen", "Warschau"),
    ("Japan", "Tokyo", "Japan", "Tokio"), ("Norway", "Oslo", "Norwegen", "Oslo"),
    ("Sweden", "Stockholm", "Schweden", "Stockholm"), ("Portugal", "Lisbon", "Portugal", "Lissabon"),
    ("Greece", "Athens", "Griechenland", "Athen"), ("Belgium", "Brussels", "Belgien", "Brüssel"),
    ("Denmark", "Copenhagen", "Dänemark", "Kopenhagen"), ("Ireland", "Dublin", "Irland", "Dublin"),
    ("Finland", "Helsinki", "Finnland", "Helsinki"), ("Hungary", "Budapest", "Ungarn", "Budapest"),
    ("Egypt", "Cairo", "Ägypten", "Kairo"), ("Canada", "Ottawa", "Kanada", "Ottawa"),
    ("Australia", "Canberra", "Australien", "Canberra"), ("Czechia", "Prague", "Tschechien", "Prag"),
]
_COLOURS = [
    ("a banana", "Yellow", "eine Banane", "Gelb"), ("grass", "Green", "Gras", "Grün"),
    ("snow", "White", "Schnee", "Weiß"), ("the sky on a clear day", "Blue", "der Himmel an einem klaren Tag", "Blau"),
    ("coal", "Black", "Kohle", "Schwarz"), ("a ripe tomato", "Red", "eine reife Tomate", "Rot"),
    ("milk chocolate", "Brown", "Milchschokolade", "Braun"), ("a lemon", "Yellow", "eine Zitrone", "Gelb"),
    ("a fire truck", "Red", "ein Feuerwehrauto", "Rot"), ("fresh spinach", "Green", "frischer Spinat", "Grün"),
]
_OPPOSITES = [
    ("hot", "Cold", "heiß", "Kalt"), ("big", "Small", "groß", "Klein"), ("fast", "Slow", "schnell", "Langsam"),
    ("up", "Down", "oben", "Unten"), ("light", "Dark", "hell", "Dunkel"), ("day", "Night", "Tag", "Nacht"),
    ("open", "Closed", "offen", "Geschlossen"), ("old", "Young", "alt", "Jung"), ("full", "Empty", "voll", "Leer"),
    ("early", "Late", "früh", "Spät"), ("loud", "Quiet", "laut", "Leise"), ("wet", "Dry", "nass", "Trocken"),
    ("rich", "Poor", "reich", "Arm"), ("strong", "Weak", "stark", "Schwach"), ("left", "Right", "links", "Rechts"),
]
_WORDS = [  # (English, German) nouns for translation
    ("dog", "Hund"), ("cat", "Katze"), ("house", "Haus"), ("tree", "Baum"), ("water", "Wasser"),
    ("book", "Buch"), ("bread", "Brot"), ("car", "Auto"), ("school", "Schule"), ("friend", "Freund"),
    ("apple", "Apfel"), ("window", "Fenster"), ("chair", "Stuhl"), ("city", "Stadt"), ("train", "Zug"),
    ("bird", "Vogel"), ("milk", "Milch"), ("key", "Schlüssel"), ("moon", "Mond"), ("sun", "Sonne"),
]
_DAYS = (["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
         ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"])
_MONTHS = (["January", "February", "March", "April", "May", "June", "July", "August", "September",
            "October", "November", "December"],
           ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
            "Oktober", "November", "Dezember"])
_YES_NO = [  # (EN statement question, DE, truth)
    ("Is the sun a star?", "Ist die Sonne ein Stern?", True),
    ("Is ice colder than boiling water?", "Ist Eis kälter als kochendes Wasser?", True),
    ("Do fish live in water?", "Leben Fische im Wasser?", True),
    ("Is Berlin in Germany?", "Liegt Berlin in Deutschland?", True),
    ("Does a week have seven days?", "Hat eine Woche sieben Tage?", True),
    ("Is ten greater than five?", "Ist zehn größer als fünf?", True),
    ("Can birds fly?", "Können Vögel fliegen?", True),
    ("Is water wet?", "Ist Wasser nass?", True),
    ("Is the moon a planet?", "Ist der Mond ein Planet?", False),
    ("Is snow hot?", "Ist Schnee heiß?", False),
    ("Do cats bark?", "Bellen Katzen?", False),
    ("Is Paris in Spain?", "Liegt Paris in Spanien?", False),
    ("Is three an even number?", "Ist drei eine gerade Zahl?", False),
    ("Does a triangle have four sides?", "Hat ein Dreieck vier Seiten?", False),
    ("Is the Atlantic a desert?", "Ist der Atlantik eine Wüste?", False),
    ("Can a fish climb trees?", "Kann ein Fisch auf Bäume klettern?", False),
    # More facts, so the tiny CPU models learn "a yes/no question gets Yes/No (Ja/Nein)" instead of
    # memorising 16 questions (with 16, German yes/no answers were the last thing they learned).
    ("Is grass green?", "Ist Gras grün?", True),
    ("Is sugar sweet?", "Ist Zucker süß?", True),
    ("Do cows give milk?", "Geben Kühe Milch?", True),
    ("Is Rome in Italy?", "Liegt Rom in Italien?", True),
    ("Is a year longer than a month?", "Ist ein Jahr länger als ein Monat?", True),
    ("Do trees have leaves?", "Haben Bäume Blätter?", True),
    ("Is two plus two four?", "Ist zwei plus zwei vier?", True),
    ("Can people walk?", "Können Menschen gehen?", True),
    ("Is milk white?", "Ist Milch weiß?", True),
    ("Do bees make honey?", "Machen Bienen Honig?", True),
    ("Is a car faster than a snail?", "Ist ein Auto schneller als eine Schnecke?", True),
    ("Is winter cold?", "Ist der Winter kalt?", True),
    ("Does the sun rise in the east?", "Geht die Sonne im Osten auf?", True),
    ("Is a mouse smaller than a horse?", "Ist eine Maus kleiner als ein Pferd?", True),
    ("Do ducks swim?", "Schwimmen Enten?", True),
    ("Is Madrid in Spain?", "Liegt Madrid in Spanien?", True),
    ("Is a lemon sour?", "Ist eine Zitrone sauer?", True),
    ("Do we sleep at night?", "Schlafen wir nachts?", True),
    ("Is the sky green?", "Ist der Himmel grün?", False),
    ("Do fish have legs?", "Haben Fische Beine?", False),
    ("Is one greater than nine?", "Ist eins größer als neun?", False),
    ("Is London in France?", "Liegt London in Frankreich?", False),
    ("Can a stone swim?", "Kann ein Stein schwimmen?", False),
    ("Is a cat a bird?", "Ist eine Katze ein Vogel?", False),
    ("Do cows fly?", "Fliegen Kühe?", False),
    ("Is ice warm?", "Ist Eis warm?", False),
    ("Does a week have ten days?", "Hat eine Woche zehn Tage?", False),
    ("Is a mouse bigger than an elephant?", "Ist eine Maus größer als ein Elefant?", False),
    ("Is sugar salty?", "Ist Zucker salzig?", False),
    ("Do horses lay eggs?", "Legen Pferde Eier?", False),
    ("Is night brighter than day?", "Ist die Nacht heller als der Tag?", False),
    ("Is Vienna in Sweden?", "Liegt Wien in Schweden?", False),
    ("Can a chair talk?", "Kann ein Stuhl sprechen?", False),
    ("Is five an even number?", "Ist fünf eine gerade Zahl?", False),
]
_LETTER_WORDS = {
    "en": ["apple", "banana", "cloud", "garden", "island", "jacket", "lemon", "mountain", "orange", "river",
           "table", "umbrella", "window", "yellow", "zebra", "pencil", "kitchen", "violin"],
    "de": ["Apfel", "Birne", "Garten", "Insel", "Jacke", "Zitrone", "Berg", "Fluss", "Tisch", "Fenster",
           "Öl", "Übung", "Äpfel", "Vogel", "Kirsche", "Wolke", "Regen", "Hafen"],
}
_COUNTS = [  # (EN question, DE question, number)
    ("How many legs does a spider have?", "Wie viele Beine hat eine Spinne?", 8),
    ("How many legs does a dog have?", "Wie viele Beine hat ein Hund?", 4),
    ("How many legs does a bird have?", "Wie viele Beine hat ein Vogel?", 2),
    ("How many legs does an ant have?", "Wie viele Beine hat eine Ameise?", 6),
    ("How many days are in a week?", "Wie viele Tage hat eine Woche?", 7),
    ("How many hours are in a day?", "Wie viele Stunden hat ein Tag?", 24),
    ("How many minutes are in an hour?", "Wie viele Minuten hat eine Stunde?", 60),
    ("How many months are in a year?", "Wie viele Monate hat ein Jahr?", 12),
    ("How many sides does a triangle have?", "Wie viele Seiten hat ein Dreieck?", 3),
    ("How many sides does a square have?", "Wie viele Seiten hat ein Quadrat?", 4),
    ("How many wheels does a bicycle have?", "Wie viele Räder hat ein Fahrrad?", 2),
    ("How many seconds are in a minute?", "Wie viele Sekunden hat eine Minute?", 60),
    ("How many days does a leap year have?", "Wie viele Tage hat ein Schaltjahr?", 366),
]
_GREETINGS = [  # (EN instruction, EN answer, DE instruction, DE answer)
    ("Say hello.", "Hello!", "Sag hallo.", "Hallo!"),
    ("Say goodbye.", "Goodbye!", "Verabschiede dich.", "Tschüss!"),
    ("Say thank you.", "Thank you!", "Bedanke dich.", "Danke!"),
    ("Greet me in German.", "Hallo!", "Begrüße mich auf Englisch.", "Hello!"),
    ("Wish me good luck.", "Good luck!", "Wünsch mir Glück.", "Viel Glück"),
    ("Reply with OK.", "OK", "Antworte mit OK.", "OK"),
    ("Say good morning.", "Good morning!", "Sag guten Morgen.", "Guten Morgen!"),
    ("Say yes.", "Yes.", "Sag ja.", "Ja."),
]

# ------------------------------------------------------------------------- the phrasings
_QUESTIONS = {
    "capital": {"en": ["What is the capital of {s}?", "Name the capital of {s}.", "Which city is the capital of {s}?"],
                "de": ["Was ist die Hauptstadt von {s}?", "Nenne die Hauptstadt von {s}.", "Welche Stadt ist die Hauptstadt von {s}?"]},
    "colour": {"en": ["What color is {s}?", "Which colour does {s} have?", "What is the usual color of {s}?"],
               "de": ["Welche Farbe hat {s}?", "Welche Farbe hat {s} normalerweise?"]},
    "opposite": {"en": ["What is the opposite of '{s}'?", "Give the antonym of '{s}'.", "Opposite of '{s}'?"],
                 "de": ["Was ist das Gegenteil von '{s}'?", "Nenne das Gegenteil von '{s}'.", "Gegenteil von '{s}'?"]},
    "translate": {"en": ["How do you say '{s}' in German?", "Translate '{s}' into German.", "What is '{s}' in German?"],
                  "de": ["Was heißt '{s}' auf Englisch?", "Übersetze '{s}' ins Englische.", "Wie sagt man '{s}' auf Englisch?"]},
    "weekday": {"en": ["Which day comes after {s}?", "What day follows {s}?", "Which day comes before {s}?"],
                "de": ["Welcher Tag kommt nach {s}?", "Welcher Wochentag folgt auf {s}?", "Welcher Tag kommt vor {s}?"]},
    "month": {"en": ["Which month comes after {s}?", "What month follows {s}?"],
              "de": ["Welcher Monat kommt nach dem {s}?", "Welcher Monat folgt auf den {s}?"]},
    "yes_no": {"en": ["{s}", "{s} Yes or no?"], "de": ["{s}", "{s} Ja oder nein?"]},
    "letter": {"en": ["What is the first letter of '{s}'?", "What is the last letter of '{s}'?"],
               "de": ["Was ist der erste Buchstabe von '{s}'?", "Was ist der letzte Buchstabe von '{s}'?"]},
    "count": {"en": ["{s}", "{s} Answer with a number."], "de": ["{s}", "{s} Antworte mit einer Zahl."]},
    "greeting": {"en": ["{s}"], "de": ["{s}"]},
    "math": {"en": ["What is {a} plus {b}?", "What is {a} minus {b}?", "What is {a} times {b}?", "{a} + {b} = ?",
                    "Calculate {a} times {b}."],
             "de": ["Was ist {a} plus {b}?", "Was ist {a} minus {b}?", "Wie viel ist {a} mal {b}?", "{a} + {b} = ?",
                    "Berechne {a} mal {b}."]},
}
_PREFIXES = {"en": ["", "Quick question: ", "Answer briefly: ", "Short answer please. ", "Question: ", "Hey! "],
             "de": ["", "Kurze Frage: ", "Antworte kurz: ", "Bitte nur kurz. ", "Frage: ", "Hallo! "]}
_SUFFIXES = {"en": ["", " Answer in one word.", " Keep it short.", " Just the answer, please.", " Be brief."],
             "de": ["", " Antworte mit einem Wort.", " Bitte kurz.", " Nur die Antwort, bitte.", " Fasse dich kurz."]}
_STYLES = ("plain", "lower", "no_punct")


def _question(category: str, lang: str, rng: random.Random) -> tuple[str, str, int]:
    """(question text, answer, question template index) for one category."""
    en = lang == "en"
    tpl, qi = pick_template(rng, _QUESTIONS[category][lang])
    if category == "capital":
        s_en, a_en, s_de, a_de = rng.choice(_CAPITALS)
        return tpl.format(s=s_en if en else s_de), a_en if en else a_de, qi
    if category == "colour":
        s_en, a_en, s_de, a_de = rng.choice(_COLOURS)
        return tpl.format(s=s_en if en else s_de), a_en if en else a_de, qi
    if category == "opposite":
        s_en, a_en, s_de, a_de = rng.choice(_OPPOSITES)
        return tpl.format(s=s_en if en else s_de), a_en if en else a_de, qi
    if category == "translate":
        w_en, w_de = rng.choice(_WORDS)
        return (tpl.format(s=w_en), w_de, qi) if en else (tpl.format(s=w_de), w_en.capitalize(), qi)
    if category == "weekday":
        days = _DAYS[0] if en else _DAYS[1]
        i = rng.randrange(7)
        step = -1 if ("before" in tpl or " vor " in tpl) else 1
        return tpl.format(s=days[i]), days[(i + step) % 7], qi
    if category == "month":
        months = _MONTHS[0] if en else _MONTHS[1]
        i = rng.randrange(12)
        return tpl.format(s=months[i]), months[(i + 1) % 12], qi
    if category == "yes_no":
        q_en, q_de, truth = rng.choice(_YES_NO)
        answer = ("Yes." if truth else "No.") if en else ("Ja." if truth else "Nein.")
        return tpl.format(s=q_en if en else q_de), answer, qi
    if category == "letter":
        word = rng.choice(_LETTER_WORDS[lang])
        letter = word[-1] if ("last" in tpl or "letzte" in tpl) else word[0]
        return tpl.format(s=word), letter.upper(), qi
    if category == "count":
        q_en, q_de, n = rng.choice(_COUNTS)
        return tpl.format(s=q_en if en else q_de), str(n), qi
    if category == "greeting":
        i_en, a_en, i_de, a_de = rng.choice(_GREETINGS)
        return tpl.format(s=i_en if en else i_de), a_en if en else a_de, qi
    if category == "math":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if "minus" in tpl and b > a:
            a, b = b, a
        result = a - b if "minus" in tpl else a * b if ("times" in tpl or "mal" in tpl) else a + b
        return tpl.format(a=a, b=b), str(result), qi
    raise ValueError(f"unknown category {category!r}")


def _style(text: str, style: str) -> str:
    if style == "lower":
        return text.lower()
    if style == "no_punct":
        return text.rstrip("?.!")
    return text


def generate(num_examples: int, seed: int, language: str = "mixed", *, mode: str = "full", math: str = "include",
             de_share: float = DEFAULT_DE_SHARE) -> Generated:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if math not in ("include", "exclude"):
        raise ValueError(f"math must be 'include' or 'exclude', got {math!r}")
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    tok = get_tokenizer()
    categories = [c for c in _QUESTIONS if math == "include" or c != "math"]
    rng = make_rng(seed, NAME)
    plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    out = Generated.empty(NAME)
    for lang in plan:
        category = rng.choice(categories)
        question, answer, qi = _question(category, lang, rng)
        n_tokens = len(tok.encode_text(answer))
        if not 1 <= n_tokens <= MAX_ANSWER_TOKENS:
            raise ValueError(f"{NAME}: answer {answer!r} has {n_tokens} tokens (must be 1-{MAX_ANSWER_TOKENS})")
        if mode == "full":
            prefix, pi = pick_template(rng, _PREFIXES[lang])
            suffix, si = pick_template(rng, _SUFFIXES[lang])
            style = rng.choices(_STYLES, weights=(6, 2, 2))[0]
            prompt = _style(prefix + question + suffix, style)
            template = f"{category}/{lang}/q{qi}/p{pi}/s{si}/{style}"
        else:
            prompt, template = question, f"{category}/{lang}/q{qi}"
        out.add_episode(MINIMAL_SYSTEM_PROMPT, single_turn(prompt, answer), lang, category=category, template=template)
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_format_lock_dataset.py",
        "Phase 1 format lock: short EN/DE Q&A with 1-5 token answers (MyPT JSONL episodes).",
        default_num=20000,
        epilog=__doc__,
    )
    parser.add_argument("--mode", choices=MODES, default="full",
                        help="full: question templates x prefixes x suffixes x styles; simple: bare questions only")
    parser.add_argument("--math", choices=("include", "exclude"), default="include",
                        help="include small arithmetic questions (default include)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["MODES", "NAME", "build_parser", "cli", "generate", "main"]
