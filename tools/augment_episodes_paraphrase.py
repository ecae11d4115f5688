#!/usr/bin/env python
"""Grow an episode file to a target count with rule-based paraphrases of its user messages.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.augment_episodes_paraphrase.
"""

from mypt_lightning.data_prep.commands.augment_episodes_paraphrase import main

if __name__ == "__main__":
    raise SystemExit(main())
