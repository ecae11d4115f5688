#!/usr/bin/env python
"""Merge an English and a German episode file into one bilingual file, pairs kept together.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.merge_bilingual_episodes.
"""

from mypt_lightning.data_prep.commands.merge_bilingual_episodes import main

if __name__ == "__main__":
    raise SystemExit(main())
