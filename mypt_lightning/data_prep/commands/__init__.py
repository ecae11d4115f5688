"""The data-preparation command lines: one module per ``tools/<name>.py`` (same name), each with
the tool's ``--help`` text as its docstring and a ``main(argv=None) -> exit status`` that runs
through :func:`mypt_lightning.errors.run_cli` (a user error is one line and exit status 2)."""
