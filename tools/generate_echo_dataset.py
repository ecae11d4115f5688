#!/usr/bin/env python
"""Phase 1 echo / anti-echo data (EN/DE). See --help."""
import sys

from mypt_lightning.generators.echo import cli

if __name__ == "__main__":
    sys.exit(cli())
