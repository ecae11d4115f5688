"""What every data-preparation command line shares: argument helpers and the error contract.

``run(main_fn, name)`` calls ``main_fn()`` and turns a :class:`UserError` (bad input, bad
flags, an existing output, a failed check) into one line on stderr and exit status 2, with
no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable

from mypt_lightning.errors import UserError

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


def run(main_fn: Callable[[], int | None], name: str) -> int:
    from data_modules.atomic_write import OutputWriteError

    try:
        code = main_fn()
    except (UserError, OutputWriteError) as exc:  # OutputWriteError: full disk, read-only output, ...
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written", file=sys.stderr)
        return 130
    return int(code or 0)
