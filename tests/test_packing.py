"""Packing: block limits, every episode once, BFD fill >= next-fit; packed targets never cross episodes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from data_modules import (
    DatasetWriter,
    EpisodeDataset,
    build_packed_block,
    make_training_example,
    pack_best_fit_decreasing,
    pack_next_fit,
    packing_fill,
)
from mypt_lightning.tokens.special_tokens import PAD_ID


def _check_blocks(blocks, lengths, block_size, max_per_block):
    placed = sorted(i for block in blocks for i in block)
    assert placed == list(range(len(lengths))), "every episode exactly once"
    for block in blocks:
        assert 1 <= len(block) <= max_per_block
        assert sum(lengths[i] for i in block) <= block_size


LENGTH_DISTRIBUTIONS = {
    "uniform": lambda rng, n, b: rng.integers(1, b + 1, size=n),
    "short": lambda rng, n, b: rng.integers(1, b // 8, size=n),
    "lognormal": lambda rng, n, b: np.clip(rng.lognormal(np.log(b / 10), 1.0, size=n).astype(int), 1, b),
    "bimodal": lambda rng, n, b: np.where(rng.random(n) < 0.5, rng.integers(1, 20, n), rng.integers(b // 2, b + 1, n)),
}


@pytest.mark.parametrize("distribution", sorted(LENGTH_DISTRIBUTIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bfd_valid_and_at_least_as_full_as_next_fit(distribution, seed):
    rng = np.random.default_rng(seed)
    block_size = 512
    lengths = LENGTH_DISTRIBUTIONS[distribution](rng, 3000, block_size)
    bfd = pack_best_fit_decreasing(lengths, block_size)
    nf = pack_next_fit(lengths, block_size)
    _check_blocks(bfd, lengths, block_size, 255)
    _check_blocks(nf, lengths, block_size, 255)
    assert packing_fill(lengths, bfd, block_size) >= packing_fill(lengths, nf, block_size)
    assert len(bfd) <= len(nf)
    assert bfd == pack_best_fit_decreasing(lengths, block_size), "deterministic"


def test_max_per_block_caps_tiny_episodes():
    lengths = np.ones(1000, dtype=int)
    for packer in (pack_best_fit_decreasing, pack_next_fit):
        blocks = packer(lengths, 4096)
        _check_blocks(blocks, lengths, 4096, 255)
        assert [len(b) for b in blocks] == [255, 255, 255, 235]
        blocks = packer(lengths, 4096, max_per_block=10)
        assert max(len(b) for b in blocks) == 10 and len(blocks) == 100


def test_exact_fits_and_best_fit_choice():
    # 6 and 4 fill a block of 10 exactly; 5 + 5 likewise; best fit places 3 into the tightest gap.
    assert sorted(map(sorted, pack_best_fit_decreasing([6, 5, 4, 5], 10))) == [[0, 2], [1, 3]]
    blocks = pack_best_fit_decreasing([7, 5, 3], 10)
    assert sorted(map(sorted, blocks)) == [[0, 2], [1]]


def test_too_long_episode_raises():
    with pytest.raises(ValueError, match="episode 1 has 11 tokens, more than block_size=10"):
        pack_best_fit_decreasing([3, 11], 10)
    with pytest.raises(ValueError, match="more than block_size"):
        pack_next_fit([11], 10)
    with pytest.raises(ValueError, match=">= 1 token"):
        pack_best_fit_decreasing([3, 0], 10)
    assert pack_best_fit_decreasing([], 10) == []


def test_bfd_scales_to_a_million_episodes():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.5, 0.9, size=1_000_000).astype(int), 1, 4096)
    start = time.perf_counter()
    blocks = pack_best_fit_decreasing(lengths, 4096)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"BFD took {elapsed:.1f}s for 1M episodes"
    assert sum(len(b) for b in blocks) == len(lengths)
    assert packing_fill(lengths, blocks, 4096) > 0.99


def test_build_packed_block():
    tokens, weights, segments = build_packed_block([([1, 2, 3], [0, 1, 1]), ([4, 5], [0, 2])], 8)
    assert tokens.tolist() == [1, 2, 3, 4, 5, PAD_ID, PAD_ID, PAD_ID]
    assert weights.tolist() == [0, 1, 1, 0, 2, 0, 0, 0]
    assert segments.tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="more than block_size"):
        build_packed_block([([1] * 5, [1] * 5), ([1] * 4, [1] * 4)], 8)
    with pytest.raises(ValueError, match="at most 255"):
        build_packed_block([([1], [1])] * 256, 300)


def test_make_training_example_docstring_case():
    tokens = np.array([10, 11, 12, 20, 21, PAD_ID, PAD_ID])
    weights = np.array([0, 1, 1, 0, 1, 0, 0], dtype=np.float32)
    segments = np.array([1, 1, 1, 2, 2, 0, 0])
    ex = make_training_example(tokens, weights, segments)
    assert ex["input_ids"].tolist() == [10, 11, 12, 20, 21, PAD_ID]
    assert ex["labels"].tolist() == [11, 12, 20, 21, PAD_ID, PAD_ID]
    assert ex["loss_weights"].tolist() == [1, 1, 0, 1, 0, 0]
    assert ex["segment_ids"].tolist() == [1, 1, 1, 2, 2, 0]
    unpacked = make_training_example(tokens[:3], weights[:3])
    assert unpacked["loss_weights"].tolist() == [1, 1] and unpacked["segment_ids"].tolist() == [1, 1]


def test_packed_targets_never_cross_episode_boundaries(tmp_path):
    """Pack, write, read back, shift: every trained target belongs to its input's episode and
    keeps that episode's own weight; nothing else is trained."""
    rng = np.random.default_rng(5)
    block_size = 64
    episodes = []
    for _ in range(120):
        n = int(rng.integers(2, 30))
        # All-positive weights: any weight-0 target below must come from the boundary rule.
        episodes.append((rng.integers(0, 50000, size=n), rng.choice([1.0, 1.5, 2.0], size=n).astype(np.float32)))
    lengths = [len(t) for t, _ in episodes]
    blocks = pack_best_fit_decreasing(lengths, block_size)
    with DatasetWriter(tmp_path / "ds", weighted=True, packed=True, block_size=block_size) as writer:
        split = writer.split("train")
        for block in blocks:
            split.add_block(*build_packed_block([episodes[i] for i in block], block_size))
    ds = EpisodeDataset(tmp_path / "ds")
    trained = 0
    for b, block in enumerate(blocks):
        item = ds[b]
        ex = make_training_example(item["tokens"], item["weights"], item["segment_ids"])
        seg_in, seg_out = item["segment_ids"][:-1], item["segment_ids"][1:]
        on = ex["loss_weights"] > 0
        assert np.all(seg_in[on] == seg_out[on]) and np.all(seg_out[on] != 0)
        # Exactly the within-episode targets are trained, each with its episode's weight.
        expected = np.concatenate([episodes[i][1][1:] for i in block])
        np.testing.assert_array_equal(ex["loss_weights"][on], expected)
        trained += int(on.sum())
    assert trained == sum(n - 1 for n in lengths)
