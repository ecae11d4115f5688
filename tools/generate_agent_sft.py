#!/usr/bin/env python
"""Phase 5 single-step tool-use episodes executed against the workspace. See --help."""
import sys

from mypt_lightning.generators.agent import cli

if __name__ == "__main__":
    sys.exit(cli())
