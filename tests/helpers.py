"""Small builders the tests share (import as ``from helpers import ...``: pytest puts tests/ on
sys.path). Fixtures built from them live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]  # the repository (its conf/ is what compose_cfg composes)
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


def tiny_overrides(dataset: Path, output_dir: Path, **extra) -> list[str]:
    """Hydra overrides for a seconds-long CPU run: a 2-layer, 32-wide model on ``dataset``
    (a packed dataset of BLOCK tokens), 6 steps, no logger, no gate; ``extra`` adds or replaces keys."""
    values = {
        "model": "tiny", "trainer": "cpu", "logger": "none", "data_mix": "none",
        "phase": "phase1_format_lock", "init_from": "null",
        "phase.dataset_dir": str(dataset), "paths.output_dir": str(output_dir),
        "paths.output_root": str(output_dir.parent),
        "model.n_embd": 32, "model.n_head": 2, "model.n_layer": 2, "model.block_size": BLOCK,
        "model.rope_scale": 1.0, "model.dropout": 0.1, "model.neftune_alpha": 5,
        "optim.lr": 3e-3, "optim.warmup_steps": 2,
        "train.max_steps": 6, "train.accumulate_grad_batches": 2,
        "train.eval_every_steps": 3, "train.checkpoint_every_steps": 3,
        "data.batch_size": 2, "data.num_workers": 2, "data.max_val_samples": 4,
        "callbacks.progress_bar": "null", "callbacks.model_summary": "null",
        "curriculum.run_gate": "false",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def compose_cfg(overrides):
    """The training config (conf/train.yaml) with ``overrides``, composed as run.py would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class StepLosses(L.Callback):
    """Records train/loss per optimizer step; optionally crashes after a given step."""

    def __init__(self, crash_after_step: int | None = None):
        self.losses: dict[int, float] = {}
        self.crash_after_step = crash_after_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = pl_module.last_step_metrics
        if metrics and trainer.global_step not in self.losses:
            self.losses[trainer.global_step] = metrics["train/loss"]
            if trainer.global_step == self.crash_after_step:
                raise SimulatedCrash(f"killed after step {trainer.global_step}")


class SimulatedCrash(RuntimeError):
    pass
