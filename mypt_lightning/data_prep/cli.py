"""What every data-preparation command line shares: argument helpers and the error contract
(``run(main_fn, name)``: :func:`mypt_lightning.errors.run_cli`, a user error is one line on
stderr and exit status 2, a bug keeps its traceback)."""

from __future__ import annotations

import argparse
import shlex
import sys

from mypt_lightning.errors import run_cli

from .jsonl import ON_ERROR_CHOICES


def parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the module docstring (kept verbatim)."""
    return argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_on_error(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", "--on_error", dest="on_error", choices=ON_ERROR_CHOICES, default="stop",
                   help="a broken record (bad JSON or schema; reported as FILE:LINE: FIELD: REASON): "
                        "'stop' (default) aborts before anything is written, 'skip' skips it and "
                        "counts it in the summary")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (for dataset metadata)."""
    args = sys.argv if argv is None else [sys.argv[0], *argv]
    return " ".join(shlex.quote(a) for a in args)


run = run_cli  # the one error contract of every command line (mypt_lightning.errors)
