#!/usr/bin/env python
"""The MyPT guide's name (tool episodes) for prepare_sft.py (one implementation for chat and tool episodes)."""
from mypt_lightning.data_prep.commands.prepare_sft import main

if __name__ == "__main__":
    raise SystemExit(main())
