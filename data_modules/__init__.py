"""The binary episode format (reader and writer), packing, samplers, mixtures, and the DataModule.

Depends on the rest of the project only through ``mypt_lightning.special_tokens``.
"""

from .collate import collate_samples, make_training_example
from .datamodule import SFTDataModule
from .episode_format import (
    FORMAT_VERSION,
    DatasetFormatError,
    DatasetMetadata,
    list_splits,
    load_metadata,
)
from .episode_reader import EpisodeDataset
from .episode_writer import DatasetWriter, SplitWriter, sha256_file
from .mixture import MixtureDataset, SourceDataset
from .packing import build_packed_block, pack_best_fit_decreasing, pack_next_fit, packing_fill
from .sampler import EpochSampler, EvalSampler, epoch_permutation

__all__ = [
    "FORMAT_VERSION",
    "DatasetFormatError",
    "DatasetMetadata",
    "DatasetWriter",
    "EpisodeDataset",
    "EpochSampler",
    "EvalSampler",
    "MixtureDataset",
    "SFTDataModule",
    "SourceDataset",
    "SplitWriter",
    "build_packed_block",
    "collate_samples",
    "epoch_permutation",
    "list_splits",
    "load_metadata",
    "make_training_example",
    "pack_best_fit_decreasing",
    "pack_next_fit",
    "packing_fill",
    "sha256_file",
]
