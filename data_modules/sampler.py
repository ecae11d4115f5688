"""Samplers that yield keys carrying their own position, so consumption can be recorded exactly.

Keys are ``(epoch, position, sample_index)``: ``position`` counts this rank's samples
within the epoch. The DataModule reads them back from each batch to know exactly how far
training has got, however far ahead the DataLoader workers have prefetched.

Epoch order (docs/design.md section 4)::

    epoch e:   perm_e = torch.randperm(N, generator seeded from (seed, e))
               drop_last: keep the first N // W * W entries
    rank r:    perm_e[r], perm_e[r + W], perm_e[r + 2W], ...   (strided, disjoint, covers all)

    position:  0        1        2      ...   N//W - 1  | next epoch: 0 ...
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

SampleKey = tuple[int, int, int]  # (epoch, position within this rank's epoch, sample index)


def derive_epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (seed, epoch); stable across platforms and versions."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_permutation(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The order of all samples in one epoch (int64 tensor)."""
    if not shuffle:
        return torch.arange(num_samples, dtype=torch.int64)
    generator = torch.Generator()
    generator.manual_seed(derive_epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


class EpochSampler(Sampler[SampleKey]):
    """Endless epoch sampler: every sample once per epoch across ranks, resumable in O(1).

    Iterating starts at ``(start_epoch, start_index)`` (``start_index`` counts this rank's
    samples within that epoch; values past the end roll over into later epochs) and never
    ends: training is bounded by ``max_steps``. There is deliberately no ``__len__`` and no
    ``set_epoch``: the epoch comes from the resume state, not from Lightning's epoch counter.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start_epoch: int = 0,
        start_index: int = 0,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if num_samples < world_size:
            raise ValueError(
                f"{num_samples} samples cannot give each of {world_size} ranks at least one sample per epoch"
            )
        if start_epoch < 0 or start_index < 0:
            raise ValueError(f"start position must be >= 0, got ({start_epoch}, {start_index})")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.samples_per_rank = num_samples // world_size
        self.start_epoch, self.start_index = self.normalize(start_epoch, start_index)

    def normalize(self, epoch: int, index: int) -> tuple[int, int]:
        """Roll an index past the end of an epoch over into the following epochs."""
        return epoch + index // self.samples_per_rank, index % self.samples_per_rank

    def rank_indices(self, epoch: int) -> torch.Tensor:
        """The sample indices this rank visits in ``epoch``, in order."""
        order = epoch_permutation(self.num_samples, self.seed, epoch, self.shuffle)
        return order[self.rank : self.samples_per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, index = self.start_epoch, self.start_index
        while True:
            indices = self.rank_indices(epoch).tolist()
            for position in range(index, self.samples_per_rank):
                yield (epoch, position, indices[position])
            epoch, index = epoch + 1, 0


class EvalSampler(Sampler[SampleKey]):
    """Deterministic, unshuffled validation order; rank r gets a contiguous, disjoint slice.

    The first ``limit`` samples (all if None) are split into ``world_size`` slices of
    ``ceil(n / world_size)`` keys; the last slices are padded with sample index -1, which
    the dataset turns into a weight-0 row, so every rank runs the same number of batches
    and every sample is evaluated exactly once::

        n = 5, world_size = 2:   rank 0: 0 1 2      rank 1: 3 4 -1
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, limit: int | None = None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.num_samples = num_samples if limit is None else min(num_samples, limit)
        self.rank = rank
        self.world_size = world_size
        self.per_rank = math.ceil(self.num_samples / world_size)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[SampleKey]:
        first = self.rank * self.per_rank
        for position in range(self.per_rank):
            index = first + position
            yield (0, position, index if index < self.num_samples else -1)
