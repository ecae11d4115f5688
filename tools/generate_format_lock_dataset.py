#!/usr/bin/env python
"""Phase 1 format lock data: short EN/DE Q&A with 1-5 token answers. See --help."""
import sys

from mypt_lightning.generators.format_lock import cli

if __name__ == "__main__":
    sys.exit(cli())
