#!/usr/bin/env python
"""Make tiktoken's r50k_base work offline (docs/design.md 9).

Run with --help for every option; the code is mypt_lightning.tokens.setup_tokenizer_cli.
"""

from mypt_lightning.tokens.setup_tokenizer_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
