#!/usr/bin/env python
"""Build the training dataset of a curriculum phase with one command: generate -> mix -> prepare.

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

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from mypt_lightning.data_prep import cli  # noqa: E402


def build_parser(prog: str = "prepare_phase.py", doc: str = __doc__) -> argparse.ArgumentParser:
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


if __name__ == "__main__":
    sys.exit(main())
