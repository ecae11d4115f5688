"""EpochSampler / EvalSampler: coverage per epoch, disjoint ranks, determinism, O(1) exact resume."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest
import torch

from data_modules import EpochSampler, EvalSampler, epoch_permutation


def take(sampler, n):
    return list(islice(iter(sampler), n))


def test_every_sample_once_per_epoch():
    sampler = EpochSampler(37, seed=4501)
    keys = take(sampler, 37 * 3)
    for epoch in range(3):
        chunk = keys[epoch * 37 : (epoch + 1) * 37]
        assert [k[0] for k in chunk] == [epoch] * 37
        assert [k[1] for k in chunk] == list(range(37))
        assert sorted(k[2] for k in chunk) == list(range(37))
    orders = [[k[2] for k in keys[e * 37 : (e + 1) * 37]] for e in range(3)]
    assert orders[0] != orders[1] != orders[2], "each epoch has its own permutation"
    assert orders[1] == epoch_permutation(37, 4501, 1).tolist()


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_are_disjoint_and_cover_all(world_size):
    n = 103
    per_rank = n // world_size
    for epoch in range(2):
        shards = []
        for rank in range(world_size):
            sampler = EpochSampler(n, seed=7, rank=rank, world_size=world_size, start_epoch=epoch)
            keys = take(sampler, per_rank)
            assert all(k[0] == epoch for k in keys) and [k[1] for k in keys] == list(range(per_rank))
            shards.append([k[2] for k in keys])
        flat = [i for shard in shards for i in shard]
        assert len(flat) == len(set(flat)) == per_rank * world_size, "disjoint, drop_last"
        # Together the ranks visit exactly the first per_rank * world_size entries of the epoch order.
        assert sorted(flat) == sorted(epoch_permutation(n, 7, epoch)[: per_rank * world_size].tolist())


def test_deterministic_and_seed_dependent():
    a = take(EpochSampler(50, seed=1), 120)
    assert a == take(EpochSampler(50, seed=1), 120)
    assert a != take(EpochSampler(50, seed=2), 120)
    unshuffled = take(EpochSampler(5, seed=1, shuffle=False), 7)
    assert [k[2] for k in unshuffled] == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("world_size,rank", [(1, 0), (3, 2)])
def test_resume_equals_uninterrupted_continuation(world_size, rank):
    n = 29
    full = take(EpochSampler(n, seed=99, rank=rank, world_size=world_size), 80)
    for k in (0, 1, 5, 8, 9, 10, 17, 40, 79):
        epoch, position, _ = full[k]
        resumed = EpochSampler(
            n, seed=99, rank=rank, world_size=world_size, start_epoch=epoch, start_index=position + 1
        )
        assert take(resumed, 80 - k - 1) == full[k + 1 :]


def test_start_index_rolls_over_and_no_len():
    sampler = EpochSampler(10, seed=3, start_epoch=1, start_index=25)
    assert (sampler.start_epoch, sampler.start_index) == (3, 5)
    assert take(sampler, 1)[0][:2] == (3, 5)
    with pytest.raises(TypeError):
        len(sampler)
    assert not hasattr(sampler, "set_epoch"), "Lightning must not drive the epoch"


def test_resume_is_o1_not_a_replay(monkeypatch):
    calls = []
    original = torch.randperm

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    sampler = EpochSampler(1000, seed=5, start_epoch=500, start_index=999)
    assert take(sampler, 2)[1][:2] == (501, 0)
    assert len(calls) == 2, "only the needed epochs' permutations are built"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        EpochSampler(3, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError):
        EpochSampler(10, seed=0, rank=2, world_size=2)


@pytest.mark.parametrize("n,world_size,limit", [(10, 1, None), (10, 3, None), (5, 2, None), (100, 4, 10), (2, 4, None)])
def test_eval_sampler_slices(n, world_size, limit):
    shards = [list(EvalSampler(n, rank, world_size, limit=limit)) for rank in range(world_size)]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1 and len(EvalSampler(n, 0, world_size, limit=limit)) == lengths.pop()
    real = [k[2] for s in shards for k in s if k[2] != -1]
    expected = min(n, limit) if limit is not None else n
    assert real == list(range(expected)), "in order, disjoint, every sample exactly once"
    for shard in shards:
        assert [k[1] for k in shard] == list(range(len(shard)))
    assert Counter(k[2] for s in shards for k in s)[-1] == sum(len(s) for s in shards) - expected
