#!/usr/bin/env python
"""Rewrite a share of the user messages of an episode file with rule-based paraphrases.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.diversify_user_messages.
"""

from mypt_lightning.data_prep.commands.diversify_user_messages import main

if __name__ == "__main__":
    raise SystemExit(main())
