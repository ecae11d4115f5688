"""Shared test setup: offline W&B, CPU only, small fixtures."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
