#!/usr/bin/env python
"""Convert a Hugging Face dataset (hub name or local file/folder) into episode JSONL.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.convert_hf_dataset.
"""

from mypt_lightning.data_prep.commands.convert_hf_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
