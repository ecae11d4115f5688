"""Small builders the tests share (import as ``from helpers import ...``: pytest puts tests/ on
sys.path). Fixtures built from them live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, records) -> Path:
    """One line per record: a dict is dumped as JSON (UTF-8, not ASCII-escaped), a str is written
    as it is (for broken or hand-made lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def save_tiny_export(path: Path, seed: int = 0, **config) -> Path:
    """A randomly initialised tiny model (``MyPTConfig.tiny(**config)``) exported to ``path``."""
    import torch

    from mypt_lightning.model import MyPT, MyPTConfig
    from mypt_lightning.weights.checkpoint import save_exported

    torch.manual_seed(seed)
    save_exported(MyPT(MyPTConfig.tiny(**config)), path)
    return path
