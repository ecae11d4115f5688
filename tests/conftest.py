"""Shared test setup: offline W&B, CPU only, small fixtures."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """One randomly initialised tiny model (seed 0, block 512), exported once per test session."""
    from helpers import save_tiny_export

    return save_tiny_export(tmp_path_factory.mktemp("tiny_export") / "model", block_size=512)
