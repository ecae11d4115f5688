#!/usr/bin/env python
"""Phase 1 (format lock) in one command: the guide's name for `prepare_phase.py phase=phase1_format_lock`.

Run with --help for every option; the code is mypt_lightning.data_prep.phase_pipeline.cli.
"""

import sys

from mypt_lightning.data_prep.phase_pipeline.cli import main_phase1 as main

if __name__ == "__main__":
    sys.exit(main())
