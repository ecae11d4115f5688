"""The binary episode format (reader and writer), packing, samplers, mixtures, and the DataModule.

Depends on the rest of the project only through ``mypt_lightning.tokens.special_tokens``.
"""

from .episode_format import (
    FORMAT_VERSION,
    DatasetFormatError,
    DatasetMetadata,
    list_splits,
    load_metadata,
)
from .episode_reader import EpisodeDataset
from .episode_writer import DatasetWriter, SplitWriter, sha256_file
from .packing import build_packed_block, pack_best_fit_decreasing, pack_next_fit, packing_fill

# torch/Lightning-backed parts load on first use: data tools that only read or write the
# format start in a fraction of a second instead of importing Lightning.
_LAZY = {
    "collate_samples": ".collate",
    "make_training_example": ".collate",
    "SFTDataModule": ".datamodule",
    "MixtureDataset": ".mixture",
    "SourceDataset": ".mixture",
    "EpochSampler": ".sampler",
    "EvalSampler": ".sampler",
    "epoch_permutation": ".sampler",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'data_modules' has no attribute {name!r}")


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
