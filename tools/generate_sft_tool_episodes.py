#!/usr/bin/env python
"""Phase 6 multi-step agentic tool episodes, validated against the workspace. See --help."""
import sys

from mypt_lightning.generators.tool_episodes import cli

if __name__ == "__main__":
    sys.exit(cli())
