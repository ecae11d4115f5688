"""Deterministic weighted mixtures of prepared datasets (docs/design.md section 4 ``data_mix``).

A mixture changes only which samples are drawn, never the data on disk, so a ratio can be
swept without re-tokenizing. Items are addressed by sampler keys ``(epoch, position, index)``
(see :mod:`data_modules.sampler`) and come back as sample dicts tagged with where they came
from, ready for :func:`data_modules.collate.collate_samples`.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mypt_lightning.tokens.special_tokens import PAD_ID

Key = int | tuple[int, int, int] | list[int]


def _split_key(key: Key) -> tuple[int, int, int]:
    if isinstance(key, (tuple, list)):
        epoch, position, index = (int(v) for v in key)
        return epoch, position, index
    return 0, -1, int(key)


class MixtureDataset(Dataset):
    """Weighted mixture of datasets with a fixed number of samples per epoch.

    Rule: shares are the weights normalised to sum 1. The first component is the primary
    (the phase's own data): it contributes each of its samples exactly once per epoch, so an
    epoch has ``E = len(first) / share_first`` samples, and every other component i
    contributes ``round(share_i * E)`` (half up). Component i's draws come from its own
    seeded permutation, without replacement, continuing across epochs and cycling to a new
    permutation when exhausted (so a small component is oversampled, a large one is covered
    over several epochs).

    Example: weights (0.9, 0.05, 0.05) over datasets of 900, 20 and 10_000 samples::

        E = 900 / 0.9 = 1000 samples per epoch:  900 primary + 50 + 50
        component 1 (20 samples):  draws 0..49 of epoch 0 = permutation cycles 0, 1 and half of 2;
                                   epoch 1 continues at draw 50 (rest of cycle 2, ...)
        component 2 (10_000):      epoch 0 sees 50 of them, epoch 1 the next 50, ...

    Index layout of one epoch: ``[0, n_0)`` primary, ``[n_0, n_0 + n_1)`` component 1, ...;
    the epoch sampler shuffles these positions. ``mixture[(epoch, position, i)]`` resolves
    index ``i`` in ``epoch``; a plain int means epoch 0. Permutations are seeded from
    ``(seed, crc32(component name), cycle)``, so adding or reweighting one component does
    not change which samples the others draw.
    """

    def __init__(self, components: Sequence[tuple[str, Dataset, float]], seed: int):
        if not components:
            raise ValueError("a mixture needs at least one component")
        names = [str(name) for name, _, _ in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        weights = [float(weight) for _, _, weight in components]
        for name, weight in zip(names, weights):
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"component {name!r}: weight must be finite and >= 0, got {weight}")
        if weights[0] <= 0:
            raise ValueError(f"the first (primary) component {names[0]!r} needs a weight > 0")
        self.names = names
        self.datasets = [dataset for _, dataset, _ in components]
        self.weights = weights
        total = sum(weights)
        self.shares = [w / total for w in weights]
        self.sizes = [len(d) for d in self.datasets]
        if self.sizes[0] == 0:
            raise ValueError(f"the primary component {names[0]!r} is empty")
        epoch_size = self.sizes[0] / self.shares[0]
        self.counts = [self.sizes[0]] + [math.floor(s * epoch_size + 0.5) for s in self.shares[1:]]
        for name, size, count in zip(names, self.sizes, self.counts):
            if count > 0 and size == 0:
                raise ValueError(f"component {name!r} is empty but its weight asks for {count} samples per epoch")
        self.seed = int(seed)
        self._offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._salts = [zlib.crc32(name.encode("utf-8")) for name in names]
        self._permutations: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def packed(self) -> list[bool]:
        return [bool(getattr(d, "packed", False)) for d in self.datasets]

    def describe(self) -> str:
        parts = [
            f"{name}: {count} of {size} (share {share:.3f})"
            for name, size, count, share in zip(self.names, self.sizes, self.counts, self.shares)
        ]
        return f"mixture of {len(self)} samples per epoch: " + "; ".join(parts)

    def _permutation(self, component: int, cycle: int) -> np.ndarray:
        key = (component, cycle)
        perm = self._permutations.get(key)
        if perm is None:
            seed = np.random.SeedSequence([self.seed, self._salts[component], cycle]).generate_state(1, np.uint64)[0]
            generator = torch.Generator()
            generator.manual_seed(int(seed >> np.uint64(1)))
            perm = torch.randperm(self.sizes[component], generator=generator).numpy()
            self._permutations[key] = perm
            while len(self._permutations) > 2 * len(self.datasets) + 2:
                self._permutations.popitem(last=False)
        else:
            self._permutations.move_to_end(key)
        return perm

    def locate(self, index: int, epoch: int = 0) -> tuple[int, int]:
        """(component, index within that component) of mixture ``index`` in ``epoch``."""
        if not 0 <= index < len(self):
            raise IndexError(f"mixture index {index} out of range for {len(self)} samples")
        component = int(np.searchsorted(self._offsets, index, side="right")) - 1
        draw = epoch * self.counts[component] + (index - int(self._offsets[component]))
        cycle, offset = divmod(draw, self.sizes[component])
        return component, int(self._permutation(component, cycle)[offset])

    def __getitem__(self, key: Key) -> dict[str, Any]:
        epoch, position, index = _split_key(key)
        component, inner = self.locate(index, epoch)
        sample = dict(self.datasets[component][inner])
        sample.update(sample_id=inner, source_id=component, epoch=epoch, position=position)
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_permutations"] = OrderedDict()
        return state


class SourceDataset(Dataset):
    """One dataset addressed by sampler keys, in stored order (validation); index -1 is a
    padding row (two PAD tokens, weight 0) used to even out ranks."""

    def __init__(self, dataset: Dataset, source_id: int = 0):
        self.dataset = dataset
        self.source_id = source_id

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        epoch, position, index = _split_key(key)
        if index == -1:
            packed = bool(getattr(self.dataset, "packed", False))
            sample = {
                "tokens": np.full(2, PAD_ID, dtype=np.int64),
                "weights": np.zeros(2, dtype=np.float32),
                "segment_ids": np.zeros(2, dtype=np.int64) if packed else None,
            }
        else:
            sample = dict(self.dataset[index])
        sample.update(sample_id=index, source_id=self.source_id, epoch=epoch, position=position)
        return sample
