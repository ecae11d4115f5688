"""Bad config values, damaged datasets and unreadable checkpoints stop a run before it builds
anything: one line naming the key or file, exit 2 from run.py, no checkpoints/run_info/logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import BLOCK, write_packed_dataset
from helpers import ROOT, compose_cfg, tiny_overrides

from data_modules.episode_format import DatasetFormatError
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.special_tokens import SPECIAL_TOKENS
from mypt_lightning.tokens.tokenizer import get_tokenizer
from mypt_lightning.training.train import train

# What Hydra itself writes into hydra.run.dir before our code runs (run.py only).
HYDRA_OWN = {".hydra", "run.log"}


def with_tokenizer_state(path: Path, state: dict | None = None) -> Path:
    state = get_tokenizer().state_dict() if state is None else state
    (path / "tokenizer_state.json").write_text(json.dumps(state))
    return path


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory) -> Path:
    path = write_packed_dataset(tmp_path_factory.mktemp("data") / "sft", {"train": 8, "val": 2})
    return with_tokenizer_state(path)


@pytest.fixture
def dataset_copy(good_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(good_dataset, copy)
    return copy


def _index(path: Path) -> np.ndarray:
    return np.fromfile(path / "train" / "episodes.idx", dtype=np.uint64).reshape(-1, 2)


def expect_refused(dataset: Path, out: Path, pattern: str, **overrides) -> str:
    """train() raises a UserError matching ``pattern`` and leaves no run directory."""
    cfg = compose_cfg(tiny_overrides(dataset, out, **overrides))
    with pytest.raises(UserError, match=pattern) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return message


# ----------------------------------------------------------------------------- config keys
@pytest.mark.parametrize("key, value", [
    ("train.accumulate_grad_batches", 0),
    ("model.n_head", 5),
    ("train.max_steps", 0),
    ("train.max_steps", -3),
    ("train.max_steps", "abc"),
    ("data.batch_size", 0),
    ("optim.lr", -1),
    ("optim.lr", "abc"),
    ("data.num_workers", -1),
    ("train.eval_every_steps", 0),
])
def test_bad_config_value_names_the_key(good_dataset, tmp_path, key, value):
    message = expect_refused(good_dataset, tmp_path / "run", rf"{key}={value!r}|{key}=", **{key: value})
    assert message.startswith("bad config: ") and key in message


def test_data_block_size_beyond_the_model_context_is_refused(good_dataset, tmp_path):
    message = expect_refused(good_dataset, tmp_path / "run", "data.block_size=128",
                             **{"data.block_size": 128})
    assert f"model.block_size={BLOCK}" in message


def test_model_block_size_smaller_than_the_packed_blocks(good_dataset, tmp_path):
    message = expect_refused(good_dataset, tmp_path / "run", "packed blocks of 64 tokens do not fit",
                             **{"model.block_size": 32})
    assert str(good_dataset / "train") in message and "model.block_size" in message


# ----------------------------------------------------------------------------- datasets
def test_truncated_tokens_are_named_before_training(dataset_copy, tmp_path):
    tokens = dataset_copy / "train" / "tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-8])
    message = expect_refused(dataset_copy, tmp_path / "run", "truncated")
    assert str(tokens) in message and "validate_sft_dataset.py" in message


@pytest.mark.parametrize("content, reason", [("{bad", "not valid JSON"), ("[]", "must hold a JSON object")])
def test_damaged_metadata_is_named(dataset_copy, tmp_path, content, reason):
    (dataset_copy / "dataset_metadata.json").write_text(content)
    message = expect_refused(dataset_copy, tmp_path / "run", reason)
    assert str(dataset_copy / "dataset_metadata.json") in message


@pytest.mark.parametrize("damage, pattern", [
    ("zero_length", r"record #3 \(start=\d+, length=0\) is empty"),
    ("overlap", r"record #4 \(start=\d+, length=64\) is misplaced: it overlaps record #3"),
])
def test_damaged_index_record_is_refused_not_trained(dataset_copy, tmp_path, damage, pattern):
    index = _index(dataset_copy)
    if damage == "zero_length":
        index[3, 1] = 0
    else:
        index[4, 0] -= 10  # overlaps the previous block; tokens at the end are covered by no record
    index.tofile(dataset_copy / "train" / "episodes.idx")
    message = expect_refused(dataset_copy, tmp_path / "run", pattern)
    assert str(dataset_copy / "train" / "episodes.idx") in message


def test_empty_train_split_is_refused(dataset_copy, tmp_path):
    """Found by tests/test_fuzz_inputs.py: an empty train split (no counts in the metadata)
    crashed with ValueError "the primary component ... is empty", naming no file."""
    for f in (dataset_copy / "train").iterdir():
        f.write_bytes(b"")
    meta = json.loads((dataset_copy / "dataset_metadata.json").read_text())
    del meta["splits"]
    (dataset_copy / "dataset_metadata.json").write_text(json.dumps(meta))
    message = expect_refused(dataset_copy, tmp_path / "run", "holds no samples")
    assert message.startswith(f"{dataset_copy / 'train'}: holds no samples: nothing to train on")


def test_missing_tokenizer_state_is_refused(dataset_copy, tmp_path):
    (dataset_copy / "tokenizer_state.json").unlink()
    message = expect_refused(dataset_copy, tmp_path / "run", "tokenizer_state.json: missing")
    assert "prepare_sft" in message


def test_contradicting_tokenizer_state_is_refused(dataset_copy, tmp_path):
    state = get_tokenizer().state_dict()
    state["special_tokens"] = {**state["special_tokens"], "<myPT_eot>": 50271}
    with_tokenizer_state(dataset_copy, state)
    expect_refused(dataset_copy, tmp_path / "run", r"tokenizer_state.json: special_tokens is .* another tokenizer")


def test_legacy_dataset_with_legacy_tokenizer_state_trains(tmp_path):
    """The original MyPT layout (legacy metadata keys, its tokenizer_state.json) passes the
    start checks and trains."""
    from test_episode_format import _legacy_shard, pack_in_order, random_episodes

    rng = np.random.default_rng(5)
    root = tmp_path / "legacy"
    blocks = {split: pack_in_order(random_episodes(rng, n, 5, 20), BLOCK) for split, n in (("train", 40), ("val", 8))}
    counts = {split: _legacy_shard(root / split, b) for split, b in blocks.items()}
    (root / "tokenizer_state.json").write_text(json.dumps({
        "token_kind": "gpt2", "chars": None, "base_vocab_size": 50257, "model_vocab_size": 50304,
        "special_token_encoder": dict(SPECIAL_TOKENS)}))
    meta = {"schema": "episode_indexed_sft_v1", "has_loss_mask": True, "weighted_mask": True,
            "packing_enabled": True, "pack_block_size": BLOCK, "vocab_size": 50304}
    for split, b in blocks.items():
        meta[f"num_{split}_episodes"], meta[f"num_{split}_tokens"] = len(b), counts[split]
    (root / "dataset_metadata.json").write_text(json.dumps(meta))
    out = tmp_path / "run"
    train(compose_cfg(tiny_overrides(root, out, **{"train.max_steps": 1, "train.accumulate_grad_batches": 1,
                                                   "data.num_workers": 0, "train.export": "false"})))
    assert (out / "checkpoints" / "last.ckpt").exists()


# ----------------------------------------------------------------------------- checkpoints
def test_corrupt_ckpt_path_is_named_before_the_run_dir_exists(good_dataset, tmp_path):
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    message = expect_refused(good_dataset, tmp_path / "run", "not a readable torch checkpoint", ckpt_path=str(bad))
    assert str(bad) in message


# ----------------------------------------------------------------------------- start-up cost
def test_training_start_does_not_scan_tokens_but_reads_check_each_sample(dataset_copy, monkeypatch):
    """Opening costs O(index): no pass over tokens.bin. A bad id is still caught, naming the
    file and the position, when its sample is read (not as an embedding index error)."""
    from data_modules import SFTDataModule, episode_reader
    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

    tokens = np.fromfile(dataset_copy / "train" / "tokens.bin", dtype=np.uint32)
    tokens[70] = TOKENIZER_VOCAB_SIZE + 5  # sample #1
    tokens.tofile(dataset_copy / "train" / "tokens.bin")

    def no_scan(*args, **kwargs):
        raise AssertionError("the DataModule scanned a whole file at start-up")

    monkeypatch.setattr(episode_reader, "_scan", no_scan)
    dm = SFTDataModule(str(dataset_copy), batch_size=2, block_size=BLOCK, epoch_seed=1)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())  # num_workers=0: the reader's error comes out as it is
    with pytest.raises(DatasetFormatError, match=rf"token id {TOKENIZER_VOCAB_SIZE + 5} at position 70 \(sample #1\)"):
        for _ in range(8):  # one epoch: 8 samples in batches of 2
            next(batches)


def test_single_token_episodes_warn_that_they_train_nothing(tmp_path):
    from data_modules import DatasetWriter, SFTDataModule

    with DatasetWriter(tmp_path / "ds", weighted=False, packed=False) as writer:
        split = writer.split("train")
        for tokens in ([5], [1, 2, 3], [7]):
            split.add_episode(tokens, [1] * len(tokens))
    dm = SFTDataModule(str(tmp_path / "ds"), batch_size=2, block_size=BLOCK, epoch_seed=1)
    with pytest.warns(UserWarning, match="2 of 3 episodes have a single token and train nothing"):
        dm.setup("fit")


# ----------------------------------------------------------------------------- run.py, real processes
def run_py(dataset: Path, tmp_path: Path, **overrides) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / "runs" / "errors"
    args = tiny_overrides(dataset, run_dir, **overrides)
    # Hydra's own run dir is runs/<run_name>: point both at the same place.
    args = [a for a in args if not a.startswith("paths.output_dir=")]
    args += [f"paths.output_root={tmp_path / 'runs'}", "run_name=errors", "logger=csv"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    return result, run_dir


def assert_one_line_exit_2(result: subprocess.CompletedProcess, run_dir: Path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    # Hydra makes the run dir (.hydra/, run.log) before run.py's code runs; nothing of ours is there.
    leftovers = set(os.listdir(run_dir)) if run_dir.exists() else set()
    assert leftovers <= HYDRA_OWN, leftovers


def test_run_py_damaged_dataset_one_line(dataset_copy, tmp_path):
    tokens = dataset_copy / "train" / "tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-8])
    result, run_dir = run_py(dataset_copy, tmp_path)
    assert_one_line_exit_2(result, run_dir, str(tokens), "truncated")


def test_run_py_corrupt_ckpt_path_one_line(good_dataset, tmp_path):
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    result, run_dir = run_py(good_dataset, tmp_path, ckpt_path=str(bad))
    assert_one_line_exit_2(result, run_dir, str(bad))


def test_run_py_bad_config_names_every_key(good_dataset, tmp_path):
    bad = {"train.max_steps": "abc", "optim.lr": "abc", "train.accumulate_grad_batches": 0,
           "model.n_head": 5, "data.batch_size": 0}
    result, run_dir = run_py(good_dataset, tmp_path, **bad)
    assert_one_line_exit_2(result, run_dir, *bad)


def test_run_py_model_block_size_below_packed_blocks(good_dataset, tmp_path):
    result, run_dir = run_py(good_dataset, tmp_path, **{"model.block_size": 32})
    assert_one_line_exit_2(result, run_dir, "packed blocks of 64 tokens", "model.block_size")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_run_py_bad_sample_found_mid_run_is_one_line(dataset_copy, tmp_path, num_workers):
    """A token id beyond the vocabulary passes the start-up checks (no token scan) and is
    found when its sample is read; from a DataLoader worker torch re-raises it rebuilt from
    its text, which used to give a RuntimeError traceback."""
    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

    path = dataset_copy / "train" / "tokens.bin"
    tokens = np.fromfile(path, dtype=np.uint32)
    tokens[BLOCK * 5 + 3] = TOKENIZER_VOCAB_SIZE + 5
    tokens.tofile(path)
    result, _ = run_py(dataset_copy, tmp_path, **{"data.num_workers": num_workers})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr[-3000:]
    assert f"error: {path}: token id {TOKENIZER_VOCAB_SIZE + 5} at position {BLOCK * 5 + 3} (sample #5)" in errors[0]
    assert "validate_sft_dataset" in errors[0]
