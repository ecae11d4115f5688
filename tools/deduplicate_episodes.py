#!/usr/bin/env python
"""Remove duplicate episodes from JSONL files (first occurrence wins, order kept).

Run with --help for every option; the code is mypt_lightning.data_prep.commands.deduplicate_episodes.
"""

from mypt_lightning.data_prep.commands.deduplicate_episodes import main

if __name__ == "__main__":
    raise SystemExit(main())
