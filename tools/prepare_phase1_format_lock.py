#!/usr/bin/env python
"""Phase 1 (format lock) in one command: the guide's name for `prepare_phase.py phase=phase1_format_lock`.

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

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prepare_phase  # noqa: E402

ALIASES = {  # option -> (override key, choices)
    "output_dir": ("phase.dataset_dir", None),
    "format_lock_mode": ("data_recipe.sources.format_lock.args.mode", ("full", "simple")),
    "format_lock_math": ("data_recipe.sources.format_lock.args.math", ("include", "exclude")),
    "echo_gibberish": ("data_recipe.sources.echo.args.gibberish", ("include", "exclude")),
    "format_lock_ratio": ("data_recipe.sources.format_lock.share", None),
    "echo_ratio": ("data_recipe.sources.echo.share", None),
}


def main(argv: list[str] | None = None) -> int:
    p = prepare_phase.build_parser("prepare_phase1_format_lock.py", __doc__)
    for option, (key, choices) in ALIASES.items():
        p.add_argument(f"--{option}", choices=choices, type=float if option.endswith("ratio") else str,
                       help=f"= {key}")
    args, extra = prepare_phase.parse(p, argv)
    overrides = ["phase=phase1_format_lock"]
    overrides += [f"{key}={getattr(args, option)}" for option, (key, _) in ALIASES.items()
                  if getattr(args, option) is not None]
    return prepare_phase.run(args, overrides + extra, "prepare_phase1_format_lock")


if __name__ == "__main__":
    sys.exit(main())
