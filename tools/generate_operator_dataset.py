#!/usr/bin/env python
"""Phase 2 operator data (COPY/WRAP/EXTRACT) with disjoint train/val splits. See --help."""
import sys

from mypt_lightning.generators.operators import cli

if __name__ == "__main__":
    sys.exit(cli())
