#!/usr/bin/env python
"""Phase 1b context-extension QA episodes from six QA dataset schemas. See --help."""
import sys

from mypt_lightning.generators.context_extension import cli

if __name__ == "__main__":
    sys.exit(cli())
