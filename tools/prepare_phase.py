#!/usr/bin/env python
"""Build the training dataset of a curriculum phase with one command: generate -> mix -> prepare.

Run with --help for every option; the code is mypt_lightning.data_prep.phase_pipeline.cli.
"""

import sys

from mypt_lightning.data_prep.phase_pipeline.cli import main as main

if __name__ == "__main__":
    sys.exit(main())
