#!/usr/bin/env python
"""The MyPT guide's name (tool episodes) for prepare_sft.py (one implementation for chat and tool episodes)."""
import runpy, sys; from pathlib import Path  # noqa: E401,E702
sys.exit(runpy.run_path(str(Path(__file__).with_name("prepare_sft.py")))["main"]())
