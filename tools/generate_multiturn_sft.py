#!/usr/bin/env python
"""Phase 4 multi-turn conversations (2-4 turns). See --help."""
import sys

from mypt_lightning.generators.multiturn import cli

if __name__ == "__main__":
    sys.exit(cli())
