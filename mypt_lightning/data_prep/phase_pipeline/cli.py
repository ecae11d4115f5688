"""The command lines of the phase pipeline: ``tools/prepare_phase.py`` (:func:`main`) and
its phase-1 shorthand ``tools/prepare_phase1_format_lock.py`` (:func:`main_phase1`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mypt_lightning.data_prep import cli

DOC = """Build the training dataset of a curriculum phase with one command: generate -> mix -> prepare.

    python tools/prepare_phase.py phase=phase3_chat_sft [--dry_run] [--force]
        [--with_replay] [--pretrain_sources PATH ...] [--with_deps] [KEY=VALUE ...]

The phase's recipe (conf/data_recipe/<phase>.yaml) is composed inside the training config
tree, so the dataset lands where `python run.py phase=<phase>` reads it (phase.dataset_dir).
KEY=VALUE are Hydra overrides of that tree, e.g. data_recipe.num_examples=2000,
data_recipe.sources.oasst2.enabled=true, paths.data_dir=/scratch/data.

  --dry_run            print every step's equivalent `python tools/...` command; write nothing
  --force              rerun every step (default: skip steps whose output is up to date)
  --with_replay        also build the shared pre-training replay dataset (data/sft_pretrain_replay)
  --pretrain_sources   pre-training token shards (.bin) / text files (.txt, .md, .jsonl) for the
                       replay dataset and phase 1b's general text; without them the bundled
                       workspace documents stand in (with a loud warning)
  --with_deps          also build the earlier phases' datasets that this phase's data_mix replays
                       and that are missing (only paths.* overrides are passed on to them)

Cross-phase and pre-training replay are mixed at training time (conf/data_mix/<phase>.yaml),
not into this phase's JSONL. See docs/phase_pipelines.md.
Exit status: 0 done, 2 a problem with the input or the config (one line on stderr).
"""

PHASE1_DOC = """Phase 1 (format lock) in one command: the guide's name for `prepare_phase.py phase=phase1_format_lock`.

    python tools/prepare_phase1_format_lock.py [--dry_run] [--output_dir DIR]
        [--format_lock_mode full|simple] [--format_lock_math include|exclude]
        [--echo_gibberish include|exclude] [--format_lock_ratio 0.7] [--echo_ratio 0.3]
        [--force] [--with_replay] [--pretrain_sources PATH ...] [KEY=VALUE ...]

The options are shorthands for overrides of conf/data_recipe/phase1_format_lock.yaml
(--format_lock_mode M = data_recipe.sources.format_lock.args.mode=M, the ratios are the
sources' shares). --output_dir sets phase.dataset_dir: train with the same override
(`python run.py phase=phase1_format_lock phase.dataset_dir=DIR`).
See tools/prepare_phase.py and docs/phase_pipelines.md.
"""

def build_parser(prog: str = "prepare_phase.py", doc: str = DOC) -> argparse.ArgumentParser:
    p = cli.parser(doc, prog=prog)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides, e.g. phase=phase3_chat_sft")
    p.add_argument("--dry_run", "--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--force", action="store_true", help="rerun every step even when its output is up to date")
    p.add_argument("--with_replay", action="store_true", help="also build the pre-training replay dataset")
    p.add_argument("--pretrain_sources", nargs="+", metavar="PATH", default=None,
                   help="pre-training token shards or text files (replay and phase 1b general text)")
    p.add_argument("--with_deps", action="store_true",
                   help="also build missing earlier-phase datasets that this phase's data_mix needs")
    return p


def run(args: argparse.Namespace, overrides: list[str], name: str = "prepare_phase") -> int:
    def go() -> int:
        from mypt_lightning.data_prep.phase_pipeline import build_plan, execute, summarize

        bad = [o for o in overrides if "=" not in o]
        if bad:
            from mypt_lightning.errors import UserError

            raise UserError(f"not a KEY=VALUE override: {bad[0]!r} (flags start with --; see --help)")
        plan = build_plan(overrides, with_replay=args.with_replay, with_deps=args.with_deps,
                          pretrain_sources=args.pretrain_sources)
        result = execute(plan, dry_run=args.dry_run, force=args.force, echo=lambda s: print(s, flush=True))
        print(summarize(plan, result, args.dry_run))
        return 0

    return cli.run(go, name)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Flags and overrides in any order; KEY=VALUE words swallowed by --pretrain_sources are overrides."""
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.pretrain_sources:
        taken = [s for s in args.pretrain_sources if "=" in s and not Path(s).exists()]
        args.pretrain_sources = [s for s in args.pretrain_sources if s not in taken] or None
        overrides += taken
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    return run(*parse(build_parser(), argv))


ALIASES = {  # option -> (override key, choices)
    "output_dir": ("phase.dataset_dir", None),
    "format_lock_mode": ("data_recipe.sources.format_lock.args.mode", ("full", "simple")),
    "format_lock_math": ("data_recipe.sources.format_lock.args.math", ("include", "exclude")),
    "echo_gibberish": ("data_recipe.sources.echo.args.gibberish", ("include", "exclude")),
    "format_lock_ratio": ("data_recipe.sources.format_lock.share", None),
    "echo_ratio": ("data_recipe.sources.echo.share", None),
}


def main_phase1(argv: list[str] | None = None) -> int:
    p = build_parser("prepare_phase1_format_lock.py", PHASE1_DOC)
    for option, (key, choices) in ALIASES.items():
        p.add_argument(f"--{option}", choices=choices, type=float if option.endswith("ratio") else str,
                       help=f"= {key}")
    args, extra = parse(p, argv)
    overrides = ["phase=phase1_format_lock"]
    overrides += [f"{key}={getattr(args, option)}" for option, (key, _) in ALIASES.items()
                  if getattr(args, option) is not None]
    return run(args, overrides + extra, "prepare_phase1_format_lock")
