"""Shared machinery of the data generators: seeding, languages, records, stats, CLI, output.

Every generator module exposes ``generate(num_examples, seed, language, ...) -> Generated``
(a pure function of its arguments: same inputs, same records, byte for byte) and
``main(argv)``, the CLI that ``tools/<name>.py`` wraps. The CLI contract::

    python tools/NAME.py --output X.jsonl --num_examples N --seed S --language en|de|mixed [...]

validates every record with ``protocol.validate_episode`` before anything is written,
writes atomically (temp file + fsync + rename: a crash never leaves a half file behind),
and prints counts plus distinct-template statistics at the end. A generator's flags other
than ``--output`` are the keyword arguments of its ``generate`` (see ``entry_points``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from mypt_lightning.tokens.protocol import validate_episode

LANGUAGE_MODES = ("en", "de", "mixed")
DEFAULT_DE_SHARE = 0.4  # German share in --language mixed (the guide asks for at least 30%)
MIN_DE_SHARE = 0.3

_Template = TypeVar("_Template")


def make_rng(seed: int, *salt: str) -> random.Random:
    """An independent, process-stable RNG per (seed, purpose): adding a new random draw in
    one part of a generator does not shift the draws of another part."""
    return random.Random(":".join([str(seed), *salt]))


def language_plan(num: int, mode: str, rng: random.Random, de_share: float = DEFAULT_DE_SHARE) -> list[str]:
    """The language of each of ``num`` slots: exact quota in mixed mode (never below
    ``MIN_DE_SHARE`` of German, even for tiny ``num``), shuffled with ``rng``."""
    if mode not in LANGUAGE_MODES:
        raise ValueError(f"language must be one of {LANGUAGE_MODES}, got {mode!r}")
    if mode != "mixed":
        return [mode] * num
    if not MIN_DE_SHARE <= de_share <= 1.0:
        raise ValueError(f"de_share must be in [{MIN_DE_SHARE}, 1], got {de_share}")
    n_de = min(num, math.ceil(num * de_share))
    plan = ["de"] * n_de + ["en"] * (num - n_de)
    rng.shuffle(plan)
    return plan


def share_plan(num: int, share: float, rng: random.Random) -> list[bool]:
    """Which of ``num`` slots belong to a share: exactly ``round(num * share)`` True, shuffled with ``rng``."""
    n_in = round(num * share)
    plan = [True] * n_in + [False] * (num - n_in)
    rng.shuffle(plan)
    return plan


def check_share(name: str, share: float) -> None:
    """A share flag must be a fraction in [0, 1]."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {share}")


def pick_template(rng: random.Random, templates: Sequence[_Template]) -> tuple[_Template, int]:
    """A random template and its index (the index goes into the record's template id)."""
    index = rng.randrange(len(templates))
    return templates[index], index


def single_turn(prompt: str, answer: str) -> list[dict]:
    """The messages of one user prompt and its plain assistant answer."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def episode(system: str | None, messages: list[dict], language: str, **meta) -> dict:
    """A record in the docs/design.md section 1 schema; ``meta`` goes to ``_meta`` (keys sorted)."""
    record: dict = {}
    if system:
        record["system"] = system
    record["messages"] = messages
    record["language"] = language
    record["_meta"] = {k: meta[k] for k in sorted(meta)}
    return record


def replay(text: str, language: str | None = None, **meta) -> dict:
    """A replay record ``{"_replay": true, "text": ...}`` (weight 1.0 on every token)."""
    record: dict = {"_replay": True, "text": text}
    if language:
        record["language"] = language
    if meta:
        record["_meta"] = {k: meta[k] for k in sorted(meta)}
    return record


@dataclass
class Generated:
    """What a generator returns: the records and its statistics."""

    records: list[dict]
    stats: "GenerationStats"

    @classmethod
    def empty(cls, generator: str) -> "Generated":
        """No records yet; the statistics carry the generator's name."""
        return cls([], GenerationStats(generator))

    def add(self, record: dict, category: str, template: str) -> None:
        """Keep ``record`` and count it under ``category`` and ``template``."""
        self.stats.add(record, category, template)
        self.records.append(record)

    def add_episode(self, system: str | None, messages: list[dict], language: str, *, category: str, template: str,
                    **meta) -> None:
        """Keep an :func:`episode` whose ``_meta`` names this generator, its category and template."""
        record = episode(system, messages, language, generator=self.stats.generator, category=category,
                         template=template, **meta)
        self.add(record, category, template)


@dataclass
class GenerationStats:
    """Counts by language and category, distinct templates, rejections; printed by the CLI."""

    generator: str
    languages: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    templates: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    prompts: set = field(default_factory=set)
    notes: list = field(default_factory=list)

    def add(self, record: dict, category: str, template: str) -> None:
        self.languages[record.get("language", "?")] += 1
        self.categories[category] += 1
        self.templates[template] += 1
        first_user = next((m for m in record.get("messages", ()) if m["role"] == "user"), None)
        self.prompts.add(first_user["content"] if first_user else record.get("text", "")[:200])

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.languages.values())

    def summary(self) -> dict:
        total = self.total or 1
        return {
            "generator": self.generator,
            "records": self.total,
            "languages": dict(sorted(self.languages.items())),
            "german_share": round(self.languages.get("de", 0) / total, 3),
            "categories": dict(sorted(self.categories.items())),
            "distinct_templates": len(self.templates),
            "distinct_first_prompts": len(self.prompts),
            "rejected": dict(sorted(self.rejected.items())),
            "notes": list(self.notes),
        }

    def report(self) -> str:
        s = self.summary()
        lines = [
            f"[{s['generator']}] {s['records']} records  languages {s['languages']}  German share {s['german_share']:.1%}",
            f"  distinct templates: {s['distinct_templates']}   distinct first prompts: {s['distinct_first_prompts']}"
            f" ({s['distinct_first_prompts'] / max(1, s['records']):.1%} of records)",
            "  categories: " + ", ".join(f"{k}={v}" for k, v in s["categories"].items()),
        ]
        per_cat: dict[str, set] = {}
        for t in self.templates:
            per_cat.setdefault(t.split("/")[0], set()).add(t)
        lines.append("  templates per family: " + ", ".join(f"{k}={len(v)}" for k, v in sorted(per_cat.items())))
        if s["rejected"]:
            lines.append("  rejected (regenerated): " + ", ".join(f"{k}={v}" for k, v in s["rejected"].items()))
        lines.extend(f"  note: {n}" for n in s["notes"])
        return "\n".join(lines)


def validate_records(records: Iterable[dict], name: str) -> None:
    """Every record must pass the protocol's schema check; a generator bug stops the run here."""
    for i, record in enumerate(records):
        validate_episode(record, where=f"{name} record {i}")


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> Path:
    """Write JSONL whole or not at all (data_modules.atomic_write)."""
    from data_modules.atomic_write import write_bytes_atomic

    return write_bytes_atomic(path, jsonl_bytes(records))


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a JSONL file, through the project's one reader (a bad or hostile line
    is an EpisodeError naming FILE:LINE)."""
    from mypt_lightning.data_prep.jsonl import iter_lines, parse_line

    return [parse_line(line, f"{path}:{number}", validate=False) for number, line in iter_lines(path)]


def build_arg_parser(prog: str, description: str, *, default_num: int, language_modes: Sequence[str] = LANGUAGE_MODES,
                     default_language: str = "mixed", epilog: str | None = None,
                     num_aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The flags every generator shares; generator-specific flags are added by the module."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, help="output JSONL file (written atomically)")
    parser.add_argument("--num_examples", *num_aliases, dest="num_examples", type=_positive_int, default=default_num,
                        help=f"number of records to write (default {default_num})")
    parser.add_argument("--seed", type=int, default=1234, help="random seed; same seed -> identical file (default 1234)")
    parser.add_argument("--language", choices=list(language_modes), default=default_language,
                        help=f"record language; 'mixed' writes {DEFAULT_DE_SHARE * 100:.0f}%% German by default (default {default_language})")
    parser.add_argument("--de_share", type=float, default=DEFAULT_DE_SHARE,
                        help=f"German share in --language mixed, >= {MIN_DE_SHARE} (default {DEFAULT_DE_SHARE})")
    return parser


def add_docs_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs_dir", default=None,
                        help="workspace document folder (default: the bundled workspace/docs)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finish(generated: Generated, output: str | Path, *, extra_outputs: dict[str, list[dict]] | None = None,
           validate: bool = True, stream=None) -> int:
    """Validate, write (each output atomically), print statistics; the CLI's last step."""
    stream = stream or sys.stdout
    outputs = {str(output): generated.records, **(extra_outputs or {})}
    if validate:
        for path, records in outputs.items():
            validate_records(records, f"{generated.stats.generator} -> {path}")
    for path, records in outputs.items():
        write_jsonl_atomic(path, records)
        print(f"wrote {len(records)} records to {path}", file=stream)
    print(generated.stats.report(), file=stream)
    return 0


def run_cli(main_fn: Callable[[list[str] | None], int], argv: list[str] | None, name: str) -> int:
    """Run a generator's main under the one error contract (:func:`mypt_lightning.errors.run_cli`):
    a user error is one line ``NAME: error: MESSAGE`` and exit status 2. A generator signals a bad
    option or input with ``ValueError`` / ``FileNotFoundError`` (its library contract), so those
    are the user's to fix here too."""
    from mypt_lightning.errors import as_user_errors
    from mypt_lightning.errors import run_cli as run_command_line

    def go() -> int:
        with as_user_errors(ValueError, FileNotFoundError):
            return main_fn(argv)

    return run_command_line(go, name)


def entry_points(build_parser: Callable[[], argparse.ArgumentParser], generate_fn: Callable[..., Generated]):
    """A generator module's ``(main, cli)``: ``main`` passes every flag but ``--output`` to
    ``generate_fn`` as the keyword argument of the same name and calls :func:`finish`."""

    def main(argv: list[str] | None = None) -> int:
        """Parse ``argv``, generate, validate, write and print statistics; errors propagate."""
        options = vars(build_parser().parse_args(argv))
        output = options.pop("output")
        return finish(generate_fn(**options), output)

    def cli(argv: list[str] | None = None) -> int:
        """``main`` for the command line: user errors become a message and exit status 2."""
        return run_cli(main, argv, build_parser().prog)

    return main, cli


__all__ = [
    "DEFAULT_DE_SHARE",
    "LANGUAGE_MODES",
    "MIN_DE_SHARE",
    "Generated",
    "GenerationStats",
    "add_docs_dir_argument",
    "build_arg_parser",
    "check_share",
    "entry_points",
    "episode",
    "finish",
    "jsonl_bytes",
    "language_plan",
    "make_rng",
    "pick_template",
    "read_jsonl",
    "replay",
    "run_cli",
    "share_plan",
    "single_turn",
    "validate_records",
    "write_jsonl_atomic",
]
