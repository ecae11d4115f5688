#!/usr/bin/env python
"""Generate a completion from a MyPT model.

Run with --help for every option; the code is mypt_lightning.inference.generate_cli.
"""

from mypt_lightning.inference.generate_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
