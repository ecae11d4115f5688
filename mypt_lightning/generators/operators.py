"""Phase 2 operators: COPY, WRAP and EXTRACT, with contrastive pairs and a clean split.

    COPY     "Copy this exactly: X"                          -> X
    WRAP     "Wrap X in square brackets."                    -> [X]
    EXTRACT  "Extract the text in quotes: He said "X" twice" -> X

Contrastive pairs: a share of records (``--pair_share``) comes in adjacent pairs with the
SAME payload and a different operator or wrapper whose answer differs (``_meta.pair``), so
the only thing that tells the two answers apart is the instruction.

Train/val split: the val file measures generalisation to unseen payloads AND unseen
phrasings, so the two files share neither. A payload belongs to val when a hash of its
lower-cased text falls in the val bucket (stable across seeds and runs); an instruction
template (and an EXTRACT carrier sentence) belongs to val when its index is 4 mod 5.
``check_disjoint`` verifies both on the finished records and the CLI prints the result;
an overlap is an error, never a warning.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    build_arg_parser,
    check_share,
    episode,
    finish,
    language_plan,
    make_rng,
    run_cli,
    single_turn,
)
from mypt_lightning.generators.echo import PHRASES
from mypt_lightning.tokens.system_prompts import MINIMAL_SYSTEM_PROMPT

NAME = "operators"
OPERATORS = ("COPY", "WRAP", "EXTRACT")
VAL_PAYLOAD_PERCENT = 15
VAL_TEMPLATE_MOD = 5  # template index % 5 == 4 -> val

# Wrappers: (left, right, EN name, DE name accusative, DE name dative)
WRAPPERS = {
    "square": ("[", "]", "square brackets", "eckige Klammern", "eckigen Klammern"),
    "round": ("(", ")", "parentheses", "runde Klammern", "runden Klammern"),
    "curly": ("{", "}", "curly braces", "geschweifte Klammern", "geschweiften Klammern"),
    "angle": ("<", ">", "angle brackets", "spitze Klammern", "spitzen Klammern"),
    "quotes": ('"', '"', "double quotes", "doppelte Anführungszeichen", "doppelten Anführungszeichen"),
    "stars": ("*", "*", "asterisks", "Sternchen", "Sternchen"),
}
# Delimiters EXTRACT can find a payload between (a subset: unambiguous inside a sentence).
EXTRACT_DELIMITERS = ("square", "round", "quotes", "angle")

TEMPLATES = {
    "COPY": {
        "en": ["Copy this exactly: {p}", "Repeat the following text verbatim: {p}", "Return this string unchanged: {p}",
               "Write back the following and nothing else: {p}", "COPY: {p}", "Duplicate this text exactly: {p}",
               "Output the following as is: {p}", "Reproduce exactly: {p}", "Copy the text after the colon: {p}",
               "Give me back this exact string: {p}"],
        "de": ["Kopiere das exakt: {p}", "Gib den folgenden Text wörtlich wieder: {p}", "Gib diese Zeichenkette unverändert zurück: {p}",
               "Schreib Folgendes zurück und sonst nichts: {p}", "KOPIEREN: {p}", "Übernimm diesen Text genau so: {p}",
               "Gib Folgendes unverändert aus: {p}", "Wiedergabe ohne Änderung: {p}", "Kopiere den Text nach dem Doppelpunkt: {p}",
               "Gib mir genau diese Zeichenkette zurück: {p}"],
    },
    "WRAP": {
        "en": ["Wrap this in {w}: {p}", "Put {w} around the following text: {p}", "Enclose the text in {w}: {p}",
               "WRAP with {w}: {p}", "Surround this with {w}: {p}", "Add {w} on both sides of: {p}",
               "Place the following between {w}: {p}", "Return the text wrapped in {w}: {p}",
               "Frame this text with {w}: {p}", "Output the text inside {w}: {p}"],
        "de": ["Setze {w} um diesen Text: {p}", "Schließe den folgenden Text in {w} ein: {p}", "Umschließe den Text mit {wd}: {p}",
               "EINRAHMEN mit {wd}: {p}", "Setze den Text in {w}: {p}", "Füge {w} auf beiden Seiten hinzu: {p}",
               "Stelle Folgendes zwischen {w}: {p}", "Gib den Text in {wd} eingeschlossen zurück: {p}",
               "Rahme diesen Text mit {wd} ein: {p}", "Gib den Text innerhalb von {wd} aus: {p}"],
    },
    "EXTRACT": {
        "en": ["Extract the text inside the {w}: {c}", "Return only what is between the {w}: {c}",
               "What is written inside the {w}? {c}", "EXTRACT the part in {w}: {c}",
               "Pull out the text enclosed in {w}: {c}", "Give me just the content of the {w}: {c}",
               "Find the text in {w} and return it: {c}", "Output only the {w} content, without the {w}: {c}",
               "Take out what stands in {w}: {c}", "Copy only the part enclosed by {w}: {c}"],
        "de": ["Extrahiere den Text in den {wd}: {c}", "Gib nur zurück, was zwischen den {wd} steht: {c}",
               "Was steht in den {wd}? {c}", "EXTRAHIEREN, Teil in {wd}: {c}",
               "Zieh den Text heraus, der in {wd} steht: {c}", "Gib mir nur den Inhalt der {wd}: {c}",
               "Finde den Text in {wd} und gib ihn zurück: {c}", "Gib nur den Inhalt ohne die {wd} aus: {c}",
               "Nimm heraus, was in den {wd} steht: {c}", "Kopiere nur den Teil innerhalb der {wd}: {c}"],
    },
}
CARRIERS = {  # sentences that hide the payload between {L} and {R}
    "en": ["The label on the box says {L}{p}{R} in large letters.", "Please file the form {L}{p}{R} before Friday.",
           "Our new project is called {L}{p}{R} internally.", "The note only said {L}{p}{R} and nothing more.",
           "She typed {L}{p}{R} into the search field.", "Reference {L}{p}{R} was attached to the ticket.",
           "At the bottom of the page it read {L}{p}{R} again.", "The courier left a parcel marked {L}{p}{R} at the door.",
           "In the log we found the entry {L}{p}{R} twice.", "He wrote {L}{p}{R} on the whiteboard."],
    "de": ["Auf dem Karton steht {L}{p}{R} in großen Buchstaben.", "Bitte reiche das Formular {L}{p}{R} bis Freitag ein.",
           "Unser neues Projekt heißt intern {L}{p}{R}.", "Auf dem Zettel stand nur {L}{p}{R} und sonst nichts.",
           "Sie gab {L}{p}{R} in das Suchfeld ein.", "Die Referenz {L}{p}{R} hing am Ticket.",
           "Unten auf der Seite stand noch einmal {L}{p}{R}.", "Der Kurier hat ein Paket mit der Aufschrift {L}{p}{R} abgegeben.",
           "Im Protokoll fanden wir den Eintrag {L}{p}{R} zweimal.", "Er schrieb {L}{p}{R} an das Whiteboard."],
}

_ADJ = ["silver", "quiet", "broken", "golden", "hidden", "northern", "frozen", "bright", "hollow", "crimson",
        "gentle", "rapid", "ancient", "narrow", "lucky", "distant", "amber", "steady", "velvet", "wild"]
_NOUN = ["harbor", "lantern", "river", "engine", "garden", "signal", "market", "tower", "bridge", "window",
         "falcon", "meadow", "anchor", "canyon", "orchard", "comet", "harvest", "island", "pepper", "thunder"]
_DE_NOUN = ["Hafen", "Laterne", "Fluss", "Motor", "Garten", "Signal", "Markt", "Turm", "Brücke", "Fenster",
            "Falke", "Wiese", "Anker", "Schlucht", "Obstgarten", "Komet", "Ernte", "Insel", "Pfeffer", "Donner"]
_DE_PREFIX = ["Projekt", "Lager", "Halle", "Gleis", "Raum", "Team", "Zone", "Route", "Akte", "Modul"]
_FIRST = ["Anna", "Lukas", "Maria", "Jonas", "Sofia", "Emil", "Clara", "Noah", "Lea", "Finn", "Mia", "Paul",
          "Ida", "Ben", "Nora", "Theo", "Lina", "Karl", "Ella", "Oskar"]
_LAST = ["Schmidt", "Becker", "Lopez", "Weber", "Rossi", "Nowak", "Hoffmann", "Fischer", "Wagner", "Keller",
         "Richter", "Brandt", "Jensen", "Meyer", "Larsen", "Kowalski", "Novak", "Berg", "Vogel", "Frank"]
_EXT = ["pdf", "txt", "csv", "docx", "png", "json", "md", "xlsx"]
_SYL = ["ka", "lo", "mir", "zu", "tep", "ran", "vo", "qui", "sel", "dor", "fa", "nik", "bu", "gro", "ste"]


def _payload(lang: str, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["words", "words", "name", "code", "number", "date", "file", "email", "gibberish", "sentence"])
    if kind == "words":
        if lang == "en":
            p = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
            p = f"the {p}" if rng.random() < 0.3 else p
        else:
            p = f"{rng.choice(_DE_PREFIX)} {rng.choice(_DE_NOUN)}"
        if rng.random() < 0.3:
            p = f"{p} {rng.randint(2, 99)}"
    elif kind == "name":
        p = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    elif kind == "code":
        p = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 4))) + f"-{rng.randint(100, 99999)}"
    elif kind == "number":
        p = str(rng.randint(1, 999999)) if rng.random() < 0.6 else f"{rng.randint(0, 999)}.{rng.randint(0, 99):02d}"
    elif kind == "date":
        p = f"{rng.randint(1990, 2035)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif kind == "file":
        p = f"{rng.choice(_NOUN)}_{rng.choice(_ADJ)}_{rng.randint(1, 99)}.{rng.choice(_EXT)}"
    elif kind == "email":
        p = f"{rng.choice(_FIRST).lower()}.{rng.choice(_LAST).lower()}@example.org"
    elif kind == "gibberish":
        p = " ".join("".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(1, 3)))
    else:
        en, de = rng.choice(PHRASES)
        p = (en if lang == "en" else de).rstrip(".?")
    return p, kind


def payload_split(payload: str) -> str:
    """'val' or 'train' for a payload: a stable hash of its lower-cased text."""
    h = int(hashlib.sha256(payload.lower().encode("utf-8")).hexdigest()[:8], 16)
    return "val" if h % 100 < VAL_PAYLOAD_PERCENT else "train"


def template_split(index: int) -> str:
    return "val" if index % VAL_TEMPLATE_MOD == VAL_TEMPLATE_MOD - 1 else "train"


def _indices(n: int, split: str) -> list[int]:
    return [i for i in range(n) if template_split(i) == split]


def _render(op: str, lang: str, payload: str, split: str, rng: random.Random, wrapper: str | None = None):
    """(instruction, answer, template id) for one operator application."""
    ti = rng.choice(_indices(len(TEMPLATES[op][lang]), split))
    tpl = TEMPLATES[op][lang][ti]
    if op == "COPY":
        return tpl.format(p=payload), payload, f"COPY/{lang}/t{ti}"
    left, right, en_name, de_acc, de_dat = WRAPPERS[wrapper]
    names = {"w": en_name if lang == "en" else de_acc, "wd": en_name if lang == "en" else de_dat}
    if op == "WRAP":
        return tpl.format(p=payload, **names), f"{left}{payload}{right}", f"WRAP/{lang}/t{ti}"
    ci = rng.choice(_indices(len(CARRIERS[lang]), split))
    carrier = CARRIERS[lang][ci].format(L=left, p=payload, R=right)
    return tpl.format(c=carrier, **names), payload, f"EXTRACT/{lang}/t{ti}/c{ci}"


def _answer_kind(config: tuple[str, str | None]) -> tuple:
    """COPY and EXTRACT both answer with the bare payload; WRAP answers with the wrapped one."""
    op, wrapper = config
    return ("wrap", wrapper) if op == "WRAP" else ("plain",)


def _config(rng: random.Random, exclude: tuple | None = None) -> tuple[str, str | None]:
    """A random (operator, wrapper); with ``exclude``, one whose ANSWER differs from that config's
    (a contrastive pair must differ in its output, not only in its wording)."""
    while True:
        op = rng.choice(OPERATORS)
        wrapper = None if op == "COPY" else rng.choice(EXTRACT_DELIMITERS if op == "EXTRACT" else tuple(WRAPPERS))
        if exclude is None or _answer_kind((op, wrapper)) != _answer_kind(exclude):
            return op, wrapper


def _unit_plan(num: int, language: str, pair_share: float, de_share: float, rng: random.Random) -> list[tuple[int, str]]:
    """(size, language) units: pairs (2 records, one payload) and singles; German records
    reach ``ceil(num * de_share)`` exactly or by one more (a pair can overshoot)."""
    sizes: list[int] = []
    while sum(sizes) < num:
        sizes.append(2 if num - sum(sizes) >= 2 and rng.random() < pair_share else 1)
    rng.shuffle(sizes)
    if language != "mixed":
        return [(n, language) for n in sizes]
    target = language_plan(num, "mixed", rng, de_share).count("de")
    langs, n_de = [], 0
    for n in sizes:
        take = n_de < target and (n_de + n <= target or n == 1 or 1 not in sizes)
        langs.append("de" if take else "en")
        n_de += n if take else 0
    if n_de < target:  # only pairs were left to reach the target: let one overshoot
        for i, (n, lang) in enumerate(zip(sizes, langs)):
            if lang == "en":
                langs[i], n_de = "de", n_de + n
                if n_de >= target:
                    break
    return list(zip(sizes, langs))


_FORBIDDEN = frozenset("[](){}<>\"*")  # wrapper/delimiter characters never occur in a payload


def _generate_split(num: int, seed: int, language: str, split: str, pair_share: float, de_share: float) -> Generated:
    rng = make_rng(seed, NAME, split)
    units = _unit_plan(num, language, pair_share, de_share, make_rng(seed, NAME, split, "units"))
    out = Generated.empty(f"{NAME}[{split}]")
    for unit, (size, lang) in enumerate(units):
        while True:  # payloads of the other split are skipped, so the two never share one
            payload, kind = _payload(lang, rng)
            if payload_split(payload) == split and not set(payload) & _FORBIDDEN:
                break
        configs = [_config(rng)]
        if size == 2:
            configs.append(_config(rng, exclude=configs[0]))
        for op, wrapper in configs:
            instruction, answer, template = _render(op, lang, payload, split, rng, wrapper)
            meta = {"generator": NAME, "operator": op, "template": template, "split": split,
                    "payload": payload, "payload_kind": kind}
            if wrapper:
                meta["wrapper"] = wrapper
            if size == 2:
                meta["pair"] = f"{split}-{unit}"
            out.add(episode(MINIMAL_SYSTEM_PROMPT, single_turn(instruction, answer), lang, **meta), op, template)
    return out


def check_disjoint(train: list[dict], val: list[dict]) -> dict:
    """Overlap of payloads and templates between two splits; raises ValueError on any."""

    def keys(records, field):
        return {r["_meta"][field] for r in records}

    shared_payloads = sorted({p.lower() for p in keys(train, "payload")} & {p.lower() for p in keys(val, "payload")})
    train_t, val_t = keys(train, "template"), keys(val, "template")
    # Template ids name instruction AND carrier; compare each component too.
    parts = lambda ts: {part for t in ts for part in _template_parts(t)}  # noqa: E731
    shared_templates = sorted(parts(train_t) & parts(val_t))
    report = {
        "train_payloads": len(keys(train, "payload")), "val_payloads": len(keys(val, "payload")),
        "shared_payloads": len(shared_payloads),
        "train_templates": len(train_t), "val_templates": len(val_t), "shared_templates": len(shared_templates),
    }
    if shared_payloads or shared_templates:
        raise ValueError(f"{NAME}: train/val overlap: payloads {shared_payloads[:5]}, templates {shared_templates[:5]}")
    return report


def _template_parts(template_id: str) -> list[str]:
    op, lang, *rest = template_id.split("/")
    return [f"{op}/{lang}/{part}" if part.startswith("t") else f"carrier/{lang}/{part}" for part in rest]


@dataclass
class OperatorDataset:
    train: Generated
    val: Generated
    disjointness: dict


def generate(num_examples: int, seed: int, language: str = "mixed", *, val_examples: int | None = None,
             pair_share: float = 0.5, de_share: float = DEFAULT_DE_SHARE) -> OperatorDataset:
    """Train records (``num_examples``) and val records (default 10%, at least 1), checked disjoint."""
    check_share("pair_share", pair_share)
    n_val = max(1, num_examples // 10) if val_examples is None else val_examples
    train = _generate_split(num_examples, seed, language, "train", pair_share, de_share)
    val = _generate_split(n_val, seed, language, "val", pair_share, de_share) if n_val else Generated.empty(f"{NAME}[val]")
    report = check_disjoint(train.records, val.records)
    note = (f"train/val disjoint: {report['train_payloads']} train vs {report['val_payloads']} val payloads, "
            f"{report['shared_payloads']} shared; {report['train_templates']} train vs {report['val_templates']} "
            f"val templates, {report['shared_templates']} shared")
    train.stats.notes.append(note)
    val.stats.notes.append(note)
    return OperatorDataset(train, val, report)


def default_val_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".val" + output.suffix)


def build_parser():
    parser = build_arg_parser(
        "generate_operator_dataset.py",
        "Phase 2 operators (COPY/WRAP/EXTRACT), train + val files with disjoint payloads and templates.",
        default_num=10000,
        epilog=__doc__,
    )
    parser.add_argument("--val_output", default=None, help="val JSONL (default: OUTPUT with .val before the suffix)")
    parser.add_argument("--val_examples", type=int, default=None, help="val records (default: 10%% of --num_examples)")
    parser.add_argument("--pair_share", type=float, default=0.5,
                        help="share of records generated as contrastive pairs (default 0.5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = generate(args.num_examples, args.seed, args.language, val_examples=args.val_examples,
                    pair_share=args.pair_share, de_share=args.de_share)
    val_path = args.val_output or default_val_path(args.output)
    finish(data.train, args.output, extra_outputs={str(val_path): data.val.records})
    print(data.val.stats.report())
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, build_parser().prog)


__all__ = ["NAME", "OPERATORS", "OperatorDataset", "WRAPPERS", "build_parser", "check_disjoint", "cli",
           "generate", "main", "payload_split", "template_split"]
