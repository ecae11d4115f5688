#!/usr/bin/env python
"""Check a prepared (binary) episode dataset; every check has a name and a verdict.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.validate_sft_dataset.
"""

from mypt_lightning.data_prep.commands.validate_sft_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
