"""The equivalent ``python tools/...`` command line of every step (printed, so a run can be
reproduced by hand), and a generator's arguments built from the recipe and checked."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shlex
from pathlib import Path

from mypt_lightning.errors import UserError

from .recipe import GENERATOR_TOOLS


def python_command(tool: str, argv: list[str]) -> str:
    return shlex.join(["python", f"tools/{tool}", *argv])


def display_command(tool: str, argv: list[str], fallback: list[str]) -> str:
    """The command line, with the workspace stand-in files shown as one (unquoted) shell glob."""
    if not fallback or not set(fallback) <= set(argv):
        return python_command(tool, argv)
    first, glob = argv.index(fallback[0]), shlex.quote(str(Path(fallback[0]).parent)) + "/*.md"
    rest = [a for a in argv if a not in set(fallback)]
    return " ".join([python_command(tool, rest[:first]), glob, shlex.join(rest[first:])]).rstrip()


def generator_argv(generator: str, output: Path, count: int, seed: int, args: dict, label: str) -> list[str]:
    """The command line of a generator for ``args`` (flag forms read from its own parser), checked."""
    parser = importlib.import_module(f"mypt_lightning.generators.{generator}").build_parser()
    actions = parser._option_string_actions  # noqa: SLF001 (argparse exposes no public lookup)
    argv = ["--output", str(output), "--num_examples", str(count), "--seed", str(seed)]
    for key, value in args.items():
        action = actions.get(f"--{key}")
        if action is None:
            raise UserError(f"{label}: {GENERATOR_TOOLS[generator]} has no option --{key}")
        if value is None or value is False:
            continue
        if value is True and action.nargs == 0:
            argv.append(f"--{key}")
            continue
        if isinstance(value, dict):  # NAME=SPEC pairs, e.g. --source squad_v2=hf; null drops one
            value = [f"{k}={v}" for k, v in value.items() if v is not None]
        if isinstance(value, list):
            if isinstance(action, argparse._AppendAction):  # noqa: SLF001
                argv += [x for v in value for x in (f"--{key}", str(v))]
            elif value:
                argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        last = err.getvalue().strip().splitlines()[-1:] or ["invalid arguments"]
        raise UserError(f"{label}: {GENERATOR_TOOLS[generator]} rejects the recipe's arguments: {last[0]}") from None
    return argv
