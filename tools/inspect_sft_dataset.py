#!/usr/bin/env python
"""Show samples and statistics of a prepared (binary) episode dataset.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.inspect_sft_dataset.
"""

from mypt_lightning.data_prep.commands.inspect_sft_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
