"""Small builders the tests share (import as ``from helpers import ...``: pytest puts tests/ on
sys.path). Fixtures built from them live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

BLOCK = 64  # block size of write_packed_dataset (and of the tiny training runs built on it)


def write_jsonl(path: Path, records, *, ensure_ascii: bool = False) -> Path:
    """One line per record: a dict is dumped as JSON (UTF-8, not ASCII-escaped unless
    ``ensure_ascii``), a str is written as it is (for broken, blank or hand-made lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=ensure_ascii)) + "\n")
    return path


def prepare_dataset(inputs, output_dir: Path, **config):
    """``prepare_sft`` on JSONL files with the tests' defaults (no val split, no progress bar, one
    tokenizer process; ``config`` overrides any ``PrepareConfig`` field); its ``PrepareResult``."""
    from mypt_lightning.data_prep.prepare import PrepareConfig, prepare_sft

    config = {"val_split": 0.0, "progress": False, "num_workers": 1, **config}
    return prepare_sft(PrepareConfig(inputs=[str(p) for p in inputs], output_dir=str(output_dir), **config))


def save_tiny_export(path: Path, seed: int = 0, **config) -> Path:
    """A randomly initialised tiny model (``MyPTConfig.tiny(**config)``) exported to ``path``."""
    import torch

    from mypt_lightning.model import MyPT, MyPTConfig
    from mypt_lightning.weights.checkpoint import save_exported

    torch.manual_seed(seed)
    save_exported(MyPT(MyPTConfig.tiny(**config)), path)
    return path


def write_packed_dataset(path: Path, blocks: dict[str, int], seed: int = 0) -> Path:
    """A packed, weighted binary dataset (``BLOCK`` tokens per block, 2-4 random episodes of 5-15
    tokens each, weights 0/1/2) with ``blocks[split]`` blocks per split and the tokenizer state."""
    import numpy as np

    from data_modules import DatasetWriter, build_packed_block
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    rng = np.random.default_rng(seed)
    with DatasetWriter(path, weighted=True, packed=True, block_size=BLOCK, tokenizer_state=get_tokenizer().state_dict()) as writer:
        for split, count in blocks.items():
            out = writer.split(split)
            for _ in range(count):
                episodes = []
                for _ in range(int(rng.integers(2, 5))):
                    n = int(rng.integers(5, 16))
                    weights = (rng.random(n) > 0.3).astype(np.float32) * rng.choice([1.0, 2.0], size=n)
                    episodes.append((rng.integers(0, 50000, size=n), weights))
                out.add_block(*build_packed_block(episodes, BLOCK))
    return path
