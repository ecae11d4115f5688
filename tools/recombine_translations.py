#!/usr/bin/env python
"""Put translated strings back into the episodes they came from.

Run with --help for every option; the code is mypt_lightning.data_prep.commands.recombine_translations.
"""

from mypt_lightning.data_prep.commands.recombine_translations import main

if __name__ == "__main__":
    raise SystemExit(main())
