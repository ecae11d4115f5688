#!/usr/bin/env python
"""Tokenize JSONL episodes (chat, tool and replay alike) into a binary episode dataset.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.prepare_sft.
"""

from mypt_lightning.data_prep.commands.prepare_sft import main

if __name__ == "__main__":
    raise SystemExit(main())
