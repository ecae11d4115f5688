#!/usr/bin/env python
"""Export a MyPT checkpoint as a transformers LlamaForCausalLM folder.

Run with --help for every option; the code is mypt_lightning.weights.export_hf_cli.
"""

from mypt_lightning.weights.export_hf_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
