#!/usr/bin/env python
"""Translate an extracted strings file with the DeepL API (resumable).

Run with --help for every option; the code is mypt_lightning.data_prep.commands.translate_deepl.
"""

from mypt_lightning.data_prep.commands.translate_deepl import main

if __name__ == "__main__":
    raise SystemExit(main())
