#!/usr/bin/env python
"""Pre-training replay episodes from token shards or text files. See --help."""
import sys

from mypt_lightning.generators.pretrain_replay import cli

if __name__ == "__main__":
    sys.exit(cli())
