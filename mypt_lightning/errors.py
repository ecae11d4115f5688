"""Errors that are the user's to fix (bad input, missing files, wrong config), and the one
error contract of every command line (:func:`run_cli`): a user error is one line on stderr
and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


class UserError(Exception):
    """A problem with the input or the configuration, explained in the message."""


class EpisodeError(UserError, ValueError):
    """A bad record: invalid JSON (:func:`mypt_lightning.jsonio.loads_strict`) or an episode
    that breaks the schema (:mod:`mypt_lightning.tokens.episode_schema`). ``str()`` is
    ``WHERE: FIELD: WHAT``.

    >>> str(EpisodeError("data.jsonl:3", "messages", "must be a list"))
    'data.jsonl:3: messages: must be a list'
    """

    def __init__(self, where: str, field: str, reason: str):
        self.where, self.field, self.reason = where, field, reason
        super().__init__(": ".join(p for p in (where, field, reason) if p))


def user_errors() -> tuple[type[Exception], ...]:
    """Every exception type that is the user's to fix: :class:`UserError` (and its subclasses:
    bad records, configs, checkpoints), and the two that ``data_modules`` raises without
    depending on this package: a dataset that breaks the format and an output that cannot
    be written (full disk, read-only or not-writable place)."""
    from data_modules.atomic_write import OutputWriteError
    from data_modules.episode_format import DatasetFormatError

    return (UserError, OutputWriteError, DatasetFormatError)


@contextmanager
def as_user_errors(*types: type[Exception]) -> Iterator[None]:
    """Inside the block, an exception of one of ``types`` is re-raised as a :class:`UserError`
    with the same message: for a command line whose library raises a plain ``ValueError`` on a
    bad option (the sampling settings, a generator's flags). Use it around the calls whose
    ``ValueError`` is the user's to fix, so a bug elsewhere keeps its traceback.

    >>> with as_user_errors(ValueError):  # doctest: +IGNORE_EXCEPTION_DETAIL
    ...     raise ValueError("top_p must be in (0, 1], got 2.0")
    Traceback (most recent call last):
    mypt_lightning.errors.UserError: top_p must be in (0, 1], got 2.0
    """
    try:
        yield
    except user_errors():
        raise
    except types as exc:
        raise UserError(str(exc)) from exc


def run_cli(main_fn: Callable[[], int | None], name: str, *,
            interrupted: str = "no output was written") -> int:
    """Call a command line's ``main_fn``; its exit status, or 2 with ``NAME: error: MESSAGE``
    on stderr for a user error, or 130 on Ctrl-C (``NAME: interrupted; INTERRUPTED``: a tool
    whose output streams to the terminal says what it stopped instead). Bugs propagate with
    their traceback.

    >>> def bad(): raise UserError("data.jsonl:3: messages: must be a list")
    >>> run_cli(bad, "prepare_sft")  # doctest: +SKIP
    2
    """
    try:
        code = main_fn()
    except user_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    return int(code or 0)
