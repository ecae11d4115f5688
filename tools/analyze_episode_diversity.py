#!/usr/bin/env python
"""Measure the diversity of JSONL episodes: distinct n-grams, template signatures, languages.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.analyze_episode_diversity.
"""

from mypt_lightning.data_prep.commands.analyze_episode_diversity import main

if __name__ == "__main__":
    raise SystemExit(main())
