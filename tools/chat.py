#!/usr/bin/env python
"""Chat with a MyPT model in the terminal (multi-turn, streaming), optionally as a tool-using agent.

Run with --help for every option; the code is mypt_lightning.inference.chat_cli.
"""

from mypt_lightning.inference.chat_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
