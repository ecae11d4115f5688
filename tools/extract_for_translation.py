#!/usr/bin/env python
"""Extract the translatable strings of an episode file, one {"key", "text"} line each.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.extract_for_translation.
"""

from mypt_lightning.data_prep.commands.extract_for_translation import main

if __name__ == "__main__":
    raise SystemExit(main())
