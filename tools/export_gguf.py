#!/usr/bin/env python
"""Export a MyPT checkpoint as a GGUF file for llama.cpp, with llama.cpp's own converter.

Run with --help for every option; the code is mypt_lightning.inference.export_gguf_cli.
"""

from mypt_lightning.inference.export_gguf_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
