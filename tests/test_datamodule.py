"""Collate, MixtureDataset and SFTDataModule, including exact resume with DataLoader workers."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from data_modules import (
    DatasetWriter,
    MixtureDataset,
    SFTDataModule,
    build_packed_block,
    collate_samples,
)
from mypt_lightning.tokens.special_tokens import PAD_ID

# The fixtures deliberately hold episodes longer than block_size + 1 (the cut is tested elsewhere).
pytestmark = pytest.mark.filterwarnings("ignore:.*are cut to their first")


def write_unpacked(path: Path, sizes: dict[str, int], seed: int, weighted: bool = False, low=3, high=20) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, weighted=weighted, packed=False) as writer:
        for split, count in sizes.items():
            out = writer.split(split)
            for _ in range(count):
                n = int(rng.integers(low, high))
                out.add_episode(rng.integers(0, 50000, size=n), rng.choice([0.0, 1.0, 2.0], size=n))
    return path


def write_packed(path: Path, sizes: dict[str, int], seed: int, block_size: int = 16) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, weighted=True, packed=True, block_size=block_size) as writer:
        for split, count in sizes.items():
            out = writer.split(split)
            for _ in range(count):
                episodes = []
                for _ in range(int(rng.integers(1, 4))):
                    n = int(rng.integers(2, block_size // 3))
                    episodes.append((rng.integers(0, 50000, size=n), np.ones(n, dtype=np.float32)))
                out.add_block(*build_packed_block(episodes, block_size))
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "primary": write_unpacked(root / "primary", {"train": 45, "val": 7}, seed=0),
        "replay": write_unpacked(root / "replay", {"train": 6}, seed=1, weighted=True),
        "packed": write_packed(root / "packed", {"train": 30, "val": 3}, seed=2),
    }


# --------------------------------------------------------------------------- collate
def test_collate_pads_to_longest_row():
    samples = [
        {"tokens": np.array([1, 2, 3]), "weights": np.array([0, 1, 1], np.float32), "segment_ids": None,
         "sample_id": 4},
        {"tokens": np.array([5, 6, 7, 8, 9, 10]), "weights": np.ones(6, np.float32), "segment_ids": None,
         "sample_id": 9},
    ]
    batch = collate_samples(samples)
    assert batch["input_ids"].shape == (2, 5) and batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"][0].tolist() == [1, 2, PAD_ID, PAD_ID, PAD_ID]
    assert batch["labels"][0].tolist() == [2, 3, PAD_ID, PAD_ID, PAD_ID]
    assert batch["loss_weights"].dtype == torch.float32 and batch["loss_weights"][0].tolist() == [1, 1, 0, 0, 0]
    assert batch["segment_ids"][0].tolist() == [1, 1, 0, 0, 0]
    assert batch["seq_lengths"].tolist() == [2, 5] and batch["sample_ids"].tolist() == [4, 9]
    assert batch["packed"] is False


def test_collate_mixed_packed_and_unpacked_is_packed():
    block = build_packed_block([([1, 2, 3], [0, 1, 1]), ([4, 5], [0, 1])], 8)
    samples = [
        {"tokens": block[0], "weights": block[1], "segment_ids": block[2], "source_id": 1},
        {"tokens": np.array([7, 8, 9]), "weights": np.ones(3, np.float32), "segment_ids": None, "source_id": 0},
    ]
    batch = collate_samples(samples)
    assert batch["packed"] is True and batch["input_ids"].shape == (2, 7)
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0, 0], [1, 1, 0, 0, 0, 0, 0]]
    assert batch["loss_weights"][0].tolist() == [1, 1, 0, 1, 0, 0, 0]
    assert batch["seq_lengths"].tolist() == [5, 2] and batch["source_ids"].tolist() == [1, 0]


# --------------------------------------------------------------------------- mixture
def _fake(n, tag):
    return [{"tokens": np.array([tag, i]), "weights": np.ones(2, np.float32), "segment_ids": None} for i in range(n)]


def test_mixture_counts_follow_shares():
    mix = MixtureDataset([("a", _fake(900, 0), 0.9), ("b", _fake(20, 1), 0.05), ("c", _fake(10_000, 2), 0.05)], seed=1)
    assert mix.counts == [900, 50, 50] and len(mix) == 1000
    mix = MixtureDataset([("a", _fake(100, 0), 3.0), ("b", _fake(7, 1), 1.0)], seed=1)  # unnormalised weights
    assert mix.counts == [100, 33]
    mix = MixtureDataset([("a", _fake(10, 0), 1.0), ("b", _fake(7, 1), 0.0)], seed=1)
    assert mix.counts == [10, 0] and len(mix) == 10


def test_mixture_draws_are_deterministic_and_cycle_without_replacement():
    parts = [("a", _fake(900, 0), 0.9), ("b", _fake(20, 1), 0.05), ("c", _fake(10_000, 2), 0.05)]
    mix = MixtureDataset(parts, seed=1)
    again = MixtureDataset(parts, seed=1)
    other = MixtureDataset(parts, seed=2)
    for epoch in range(3):
        drawn = [mix.locate(i, epoch) for i in range(len(mix))]
        assert drawn == [again.locate(i, epoch) for i in range(len(mix))]
        assert sorted(j for c, j in drawn if c == 0) == list(range(900)), "primary: each sample once per epoch"
    assert [other.locate(i, 0) for i in range(900, 1000)] != [mix.locate(i, 0) for i in range(900, 1000)]
    # Component b (20 samples, 50 draws per epoch): consecutive windows of 20 draws are permutations.
    stream = [mix.locate(i, e)[1] for e in range(2) for i in range(900, 950)]
    for start in range(0, 100, 20):
        assert sorted(stream[start : start + 20]) == list(range(20))
    # Component c (10_000 samples): successive epochs draw new samples, none repeated.
    seen = [mix.locate(i, e)[1] for e in range(4) for i in range(950, 1000)]
    assert len(set(seen)) == 200
    item = mix[(2, 17, 905)]
    assert item["source_id"] == 1 and item["epoch"] == 2 and item["position"] == 17
    assert item["sample_id"] == mix.locate(905, 2)[1] and item["tokens"][0] == 1


def test_mixture_reweighting_keeps_other_components_draws():
    a, b, c = ("a", _fake(100, 0), 0.8), ("b", _fake(50, 1), 0.1), ("c", _fake(50, 2), 0.1)
    base = MixtureDataset([a, b, c], seed=3)
    swept = MixtureDataset([a, b, ("c", c[1], 0.2)], seed=3)
    b_base = [base.locate(i, 0)[1] for i in range(100, 100 + base.counts[1])]
    b_swept = [swept.locate(i, 0)[1] for i in range(100, 100 + swept.counts[1])]
    assert b_swept[: len(b_base)] == b_base[: len(b_swept)]


def test_mixture_rejects_bad_components():
    with pytest.raises(ValueError, match="primary"):
        MixtureDataset([("a", _fake(3, 0), 0.0), ("b", _fake(3, 0), 1.0)], seed=0)
    with pytest.raises(ValueError, match="empty"):
        MixtureDataset([("a", _fake(3, 0), 1.0), ("b", [], 1.0)], seed=0)
    with pytest.raises(ValueError, match="unique"):
        MixtureDataset([("a", _fake(3, 0), 1.0), ("a", _fake(3, 0), 1.0)], seed=0)


# --------------------------------------------------------------------------- DataModule
def make_dm(datasets, **overrides) -> SFTDataModule:
    kwargs = dict(
        dataset_dir=str(datasets["primary"]),
        data_mix=[
            {"name": "primary", "path": str(datasets["primary"]), "weight": 0.8},
            {"name": "replay", "path": str(datasets["replay"]), "weight": 0.1},
            {"name": "packed", "path": str(datasets["packed"]), "weight": 0.1},
        ],
        batch_size=4,
        block_size=15,
        epoch_seed=4501,
        num_workers=2,
        eval_sets={"packed_eval": str(datasets["packed"]), "replay_eval": str(datasets["replay"])},
    )
    kwargs.update(overrides)
    return SFTDataModule(**kwargs)


def attach_fake_trainer(dm, rank=0, world_size=1):
    dm.trainer = SimpleNamespace(training=True, global_rank=rank, world_size=world_size)
    return dm


def fingerprint(batch):
    return (batch["epoch"].tolist(), batch["position"].tolist(), batch["source_ids"].tolist(),
            batch["sample_ids"].tolist(), batch["input_ids"].tolist())


def test_resume_with_workers_matches_uninterrupted_run(datasets):
    """State taken after k consumed batches (workers have prefetched further) resumes exactly."""
    total, k = 40, 17  # 57 samples per epoch / 4 per batch: crosses two epoch boundaries
    dm = attach_fake_trainer(make_dm(datasets))
    dm.setup("fit")
    assert len(dm.train_set) == 57  # 45 primary + 2 * round(0.1 * 45 / 0.8)
    loader = dm.train_dataloader()
    assert loader.num_workers == 2
    reference, state = [], None
    for step, batch in enumerate(islice(iter(loader), total)):
        batch = dm.on_before_batch_transfer(batch, 0)
        reference.append(fingerprint(batch))
        if step == k - 1:
            state = dm.state_dict()
    assert (state["epoch"], state["index"]) == divmod(k * 4, 57)
    assert {e for fp in reference for e in fp[0]} == {0, 1, 2}

    resumed = attach_fake_trainer(make_dm(datasets))
    resumed.setup("fit")
    resumed.load_state_dict(state)
    after = [fingerprint(b) for b in islice(iter(resumed.train_dataloader()), total - k)]
    assert after == reference[k:]


def test_validation_does_not_advance_training_state(datasets):
    dm = attach_fake_trainer(make_dm(datasets, num_workers=0))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    dm.on_before_batch_transfer(batch, 0)
    state = dm.state_dict()
    dm.trainer.training = False
    for loader in dm.val_dataloader():
        for val_batch in loader:
            dm.on_before_batch_transfer(val_batch, 0)
    assert dm.state_dict() == state


def test_train_batches_and_epoch_coverage(datasets):
    dm = make_dm(datasets, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    with pytest.raises(TypeError):
        len(loader)  # endless: training is bounded by max_steps
    rows = [
        (s, i)
        for b in islice(iter(loader), 15)
        for e, s, i in zip(b["epoch"].tolist(), b["source_ids"].tolist(), b["sample_ids"].tolist())
        if e == 0
    ]
    counts = Counter(s for s, _ in rows)
    assert counts == {0: 45, 1: 6, 2: 6}, "one epoch = 45 primary + round(0.1 * 45 / 0.8) = 6 of each other"
    assert sorted(i for s, i in rows if s == 0) == list(range(45))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[1] <= 15 and batch["input_ids"].dtype == torch.int64


def test_val_loaders_names_order_and_rank_slices(datasets):
    dm = make_dm(datasets, num_workers=0, val_batch_size=2)
    assert dm.val_set_names == ["val", "packed_eval", "replay_eval"]
    dm.setup("validate")
    assert dm.val_set_names == ["val", "packed_eval", "replay_eval"]
    sizes = [7, 3, 6]  # primary val, packed val, replay has no val -> its train split
    per_rank = []
    for rank in range(2):
        attach_fake_trainer(dm, rank=rank, world_size=2)
        loaders = dm.val_dataloader()
        assert len(loaders) == 3
        per_rank.append([[i for b in loader for i in b["sample_ids"].tolist()] for loader in loaders])
        assert loaders[1].dataset.dataset.packed and next(iter(loaders[1]))["packed"] is True
    for set_number, size in enumerate(sizes):
        r0, r1 = per_rank[0][set_number], per_rank[1][set_number]
        assert len(r0) == len(r1), "every rank runs the same number of batches"
        assert [i for i in r0 + r1 if i != -1] == list(range(size))


def test_max_val_samples_and_no_primary_val(datasets):
    dm = make_dm(datasets, num_workers=0, max_val_samples=2, eval_sets=None)
    dm.setup("validate")
    (loader,) = dm.val_dataloader()
    assert [i for b in loader for i in b["sample_ids"].tolist()] == [0, 1]
    only_replay = SFTDataModule(dataset_dir=str(datasets["replay"]), batch_size=2, block_size=15, epoch_seed=1,
                                eval_sets={"p": str(datasets["primary"])})
    with pytest.warns(UserWarning, match="no val split"):
        assert only_replay.val_set_names == ["p"]


def test_constructor_validation(datasets):
    with pytest.raises(ValueError, match="must be the first data_mix component"):
        make_dm(datasets, dataset_dir=str(datasets["replay"]))
    with pytest.raises(ValueError, match="dataset_dir or data_mix"):
        SFTDataModule(batch_size=1, block_size=8, epoch_seed=0)
    with pytest.raises(ValueError, match="do not fit"):
        dm = make_dm(datasets, block_size=8, num_workers=0)
        dm.setup("fit")


def test_hydra_style_config_objects(datasets):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "data_mix": [{"name": "primary", "path": str(datasets["primary"]), "weight": 0.9},
                     {"name": "replay", "path": str(datasets["replay"]), "weight": 0.1}],
        "eval_sets": {"replay": str(datasets["replay"])},
    })
    dm = SFTDataModule(dataset_dir=str(datasets["primary"]), data_mix=cfg.data_mix, eval_sets=cfg.eval_sets,
                       batch_size=2, block_size=15, epoch_seed=1)
    assert [c[0] for c in dm.components] == ["primary", "replay"] and dm.val_set_names == ["val", "replay"]
    assert isinstance(dm.hparams["data_mix"], list) and isinstance(dm.hparams["data_mix"][0], dict)


def test_distributed_requires_own_sharding(datasets):
    dm = make_dm(datasets, num_workers=0)
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=2,
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=True))
    with pytest.raises(RuntimeError, match="use_distributed_sampler=False"):
        dm.train_dataloader()


def test_corrupt_dataset_error_surfaces_unchanged(tmp_path):
    from data_modules import DatasetFormatError

    path = write_unpacked(tmp_path / "bad", {"train": 3}, seed=0)
    (path / "train" / "mask.bin").write_bytes(b"\x01")
    dm = SFTDataModule(dataset_dir=str(path), batch_size=1, block_size=8, epoch_seed=0)
    with pytest.raises(DatasetFormatError, match="mask.bin: size mismatch"):
        dm.setup("fit")


# --------------------------------------------------------------------------- real Trainer: fit, checkpoint, resume
class RecordingModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Embedding(50304, 4)
        self.seen: list[tuple] = []
        self.validated = 0

    def training_step(self, batch, batch_idx):
        self.seen.append(fingerprint(batch))
        return (self.layer(batch["input_ids"]).sum(-1) * batch["loss_weights"]).mean()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.validated += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(datasets, max_steps, ckpt_path=None):
    module = RecordingModule()
    dm = make_dm(datasets)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, val_check_interval=4,
                        check_val_every_n_epoch=None, num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module


def test_lightning_checkpoint_resume_is_exact(datasets, tmp_path):
    _, full = _fit(datasets, 20)
    trainer, first = _fit(datasets, 9)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["SFTDataModule"]["epoch"] == 0 and saved["SFTDataModule"]["index"] == 36
    _, second = _fit(datasets, 20, ckpt_path=str(ckpt))
    assert len(full.seen) == 20 and full.validated > 0 and first.validated > 0  # validation in between
    assert first.seen + second.seen == full.seen
