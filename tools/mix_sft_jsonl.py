#!/usr/bin/env python
"""Mix JSONL episode files by ratio into one file (with provenance in _meta.source).

Run with --help for every option; the code is mypt_lightning.data_prep.commands.mix_sft_jsonl.
"""

from mypt_lightning.data_prep.commands.mix_sft_jsonl import main

if __name__ == "__main__":
    raise SystemExit(main())
