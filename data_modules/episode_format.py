"""The binary episode dataset format (docs/design.md section 2): file names, dtypes, metadata, errors.

The reader is :mod:`data_modules.episode_reader`, the writer :mod:`data_modules.episode_writer`;
both go through this module so the format is written down once.

Layout::

    DATASET/
      dataset_metadata.json      required (see "Metadata keys" below)
      tokenizer_state.json       optional for reading; training and validate_sft_dataset
                                 require it and compare it with the tokenizer
      train/
        tokens.bin               uint32, all samples back to back
        mask.bin                 uint8 0/1 per token: mask[i] = weight of PREDICTING tokens[i]
        mask_weighted.bin        float32 per token, optional, takes precedence over mask.bin
        segment_ids.bin          uint8 per token, packed datasets only:
                                 0 = padding, 1..255 = episode number inside the block
        episodes.idx             uint64 pairs (start, length), one per sample
                                 (an episode, or a packed block of exactly block_size tokens);
                                 the records tile tokens.bin: the first starts at 0, each
                                 starts where the previous one ends, the last ends at the
                                 end of tokens.bin, none is empty (a 1-token episode is valid
                                 but has no target: training warns about it)
      train/shard_00000/...      sharded variant: the same files per shard, read in shard order
      val/...                    same as train

Legacy quirk (MyPT ``EpisodeShardWriter``): a multi-shard split was written with its FIRST
shard directly in the split directory and the following ones in ``shard_00001/``,
``shard_00002/``, ... The reader accepts that layout (top-level files = shard 0) because the
legacy ``num_<split>_episodes`` counts include the top-level shard; a split directory holding
both top-level files and ``shard_00000/`` is ambiguous and refused.

Metadata keys
-------------
``dataset_metadata.json`` must exist and hold a JSON object. Every key below is optional;
the reader checks each one that is present against the files and ignores unknown keys.

=========================  =============================  ====================================
ours (written by us)       legacy MyPT equivalent         checked against
=========================  =============================  ====================================
format_version (int)       (absent)                       must be <= FORMAT_VERSION
packed (bool)              packing_enabled (bool)         segment_ids.bin present in every shard
weighted (bool)            weighted_mask (bool)           mask_weighted.bin present in every shard
block_size (int|null)      pack_block_size (int)          packed: every sample has this length
has_loss_mask (bool)       has_loss_mask (bool)           a mask file exists (always required)
splits.<s>.samples         num_<s>_episodes               records in episodes.idx (all shards)
splits.<s>.tokens          num_<s>_tokens                 tokens in tokens.bin (all shards)
splits.<s>.shards          num_<s>_shards                 file groups read (unsharded = 1)
=========================  =============================  ====================================

Informational keys we write (not checked): ``format``, ``tokenizer``, ``sources`` (each with
``sha256``), ``command``, ``created_at``, ``splits.<s>.episodes`` (episodes inside packed
blocks), ``splits.<s>.supervised_tokens``, ``splits.<s>.weight_sum``, plus ``extra_metadata``.
Legacy informational keys (``schema``, ``vocab_size``, ``tokenization``, ``*_mask_ratio``,
...) are kept in :attr:`DatasetMetadata.raw` and never required.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "mypt-episodes"
FORMAT_VERSION = 1

TOKENS_FILE = "tokens.bin"
MASK_FILE = "mask.bin"
MASK_WEIGHTED_FILE = "mask_weighted.bin"
SEGMENT_IDS_FILE = "segment_ids.bin"
INDEX_FILE = "episodes.idx"
METADATA_FILE = "dataset_metadata.json"
TOKENIZER_STATE_FILE = "tokenizer_state.json"

TOKEN_DTYPE = np.dtype("<u4")
MASK_DTYPE = np.dtype("u1")
WEIGHT_DTYPE = np.dtype("<f4")
SEGMENT_DTYPE = np.dtype("u1")
INDEX_DTYPE = np.dtype("<u8")
INDEX_RECORD_BYTES = 2 * INDEX_DTYPE.itemsize  # (start, length)

MAX_SEGMENTS_PER_BLOCK = 255  # segment ids are uint8 and 0 means padding

SHARD_DIR_PATTERN = re.compile(r"shard_(\d+)")
SPLIT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def shard_dir_name(number: int) -> str:
    return f"shard_{number:05d}"


class DatasetFormatError(ValueError):
    """A dataset on disk that does not follow the format; names the file and the reason.

    ``DatasetFormatError(message)`` with one argument rebuilds the error from its text
    (``PATH: REASON``, or a traceback ending in that line): torch's DataLoader re-raises an
    exception from a worker as ``type(exc)(traceback_text)`` and falls back to a
    RuntimeError when that fails, which would turn a bad sample into a bug report. The
    worker's traceback is kept in ``worker_traceback``. Pickles as ``(path, reason)``.
    """

    def __init__(self, path: str | Path, reason: str | None = None):
        self.worker_traceback: str | None = None
        if reason is None:
            text = str(path)
            path, reason = self._parse(text)
            if "\n" in text.strip():
                self.worker_traceback = text
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    @classmethod
    def _parse(cls, text: str) -> tuple[str, str]:
        """(path, reason) from ``PATH: REASON`` or from the last ``...DatasetFormatError: PATH: REASON``
        line of a traceback."""
        line = text.strip()
        marker = f"{cls.__name__}: "
        for candidate in reversed(text.strip().splitlines()):
            head, found, rest = candidate.partition(marker)
            if found and re.fullmatch(r"(?:[A-Za-z_][\w.]*\.)?", head):
                line = rest
                break
        # A path may itself hold ": ": prefer the first split whose path exists.
        splits = [m.start() for m in re.finditer(": ", line)]
        for at in splits:
            if Path(line[:at]).exists():
                return line[:at], line[at + 2:]
        if splits:
            return line[: splits[0]], line[splits[0] + 2:]
        return "(unknown file)", line

    def __reduce__(self):
        return type(self), (str(self.path), self.reason)


@dataclass(frozen=True)
class SplitCounts:
    """What the metadata says about one split (None = not recorded)."""

    samples: int | None = None
    tokens: int | None = None
    shards: int | None = None


@dataclass(frozen=True)
class DatasetMetadata:
    """``dataset_metadata.json`` normalised over our keys and the legacy MyPT ones."""

    path: Path
    raw: dict[str, Any]
    format_version: int | None
    packed: bool | None
    weighted: bool | None
    block_size: int | None
    has_loss_mask: bool | None

    def split_counts(self, split: str) -> SplitCounts:
        ours = self.raw.get("splits")
        entry = ours.get(split) if isinstance(ours, dict) else None
        if entry is not None and not isinstance(entry, dict):
            raise DatasetFormatError(self.path, f"'splits.{split}' must be an object, got {entry!r}")
        entry = entry or {}
        return SplitCounts(
            samples=self._count(entry, "samples", f"num_{split}_episodes", split),
            tokens=self._count(entry, "tokens", f"num_{split}_tokens", split),
            shards=self._count(entry, "shards", f"num_{split}_shards", split),
        )

    def _count(self, entry: dict, ours: str, legacy: str, split: str) -> int | None:
        values = {}
        if ours in entry:
            values[f"splits.{split}.{ours}"] = entry[ours]
        if legacy in self.raw:
            values[legacy] = self.raw[legacy]
        return _agree(self.path, values, _as_count)


def _as_count(path: Path, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetFormatError(path, f"field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _as_bool(path: Path, key: str, value: Any) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise DatasetFormatError(path, f"field {key!r} must be true or false, got {value!r}")
    return value


def _as_block_size(path: Path, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatasetFormatError(path, f"field {key!r} must be a positive integer, got {value!r}")
    return value


def _agree(path: Path, values: dict[str, Any], convert) -> Any:
    """The one value that all present spellings of a field agree on (None if none present)."""
    converted = {key: convert(path, key, value) for key, value in values.items()}
    distinct = {value for value in converted.values() if value is not None}
    if len(distinct) > 1:
        listing = ", ".join(f"{key}={value!r}" for key, value in converted.items())
        raise DatasetFormatError(path, f"contradicting fields: {listing}")
    return distinct.pop() if distinct else None


def _present(raw: dict, *keys: str) -> dict[str, Any]:
    return {key: raw[key] for key in keys if key in raw}


def load_metadata(dataset_dir: str | Path) -> DatasetMetadata:
    """Read and normalise ``DATASET/dataset_metadata.json``; errors name the file and field."""
    path = Path(dataset_dir) / METADATA_FILE
    raw = _read_json_object(path, "dataset metadata")

    version = raw.get("format_version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise DatasetFormatError(path, f"field 'format_version' must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise DatasetFormatError(
                path,
                f"format_version {version} is newer than this reader understands ({FORMAT_VERSION}); "
                "upgrade mypt-lightning",
            )
    return DatasetMetadata(
        path=path,
        raw=raw,
        format_version=version,
        packed=_agree(path, _present(raw, "packed", "packing_enabled"), _as_bool),
        weighted=_agree(path, _present(raw, "weighted", "weighted_mask"), _as_bool),
        block_size=_agree(path, _present(raw, "block_size", "pack_block_size"), _as_block_size),
        has_loss_mask=_agree(path, _present(raw, "has_loss_mask"), _as_bool),
    )


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetFormatError(path, f"missing {what} file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DatasetFormatError(path, f"not valid JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise DatasetFormatError(path, f"not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetFormatError(path, f"must hold a JSON object, got {type(raw).__name__}")
    return raw


def load_tokenizer_state(dataset_dir: str | Path) -> dict[str, Any]:
    """``DATASET/tokenizer_state.json`` as a dict (the caller compares it with its tokenizer)."""
    return _read_json_object(Path(dataset_dir) / TOKENIZER_STATE_FILE, "tokenizer state")


def find_shard_dirs(split_dir: Path) -> list[Path]:
    """The directories holding a split's files, in read order (see the legacy quirk above)."""
    numbered: dict[int, Path] = {}
    for child in split_dir.iterdir():
        match = SHARD_DIR_PATTERN.fullmatch(child.name)
        if match and child.is_dir():
            number = int(match.group(1))
            if number in numbered:
                raise DatasetFormatError(child, f"duplicate shard number {number} (also {numbered[number].name})")
            numbered[number] = child
    top_level = (split_dir / TOKENS_FILE).exists() or (split_dir / INDEX_FILE).exists()
    if not numbered:
        return [split_dir] if top_level else []

    first = 0
    if top_level:
        if 0 in numbered:
            raise DatasetFormatError(
                split_dir,
                f"ambiguous layout: both top-level {TOKENS_FILE}/{INDEX_FILE} and {shard_dir_name(0)}/",
            )
        first = 1  # legacy writer: shard 0 lives in the split directory itself
    expected = list(range(first, first + len(numbered)))
    if sorted(numbered) != expected:
        missing = sorted(set(range(first, max(numbered) + 1)) - set(numbered))
        raise DatasetFormatError(
            split_dir, f"shard directories are not contiguous: missing {[shard_dir_name(n) for n in missing]}"
        )
    shards = [numbered[n] for n in expected]
    return ([split_dir] if top_level else []) + shards


def list_splits(dataset_dir: str | Path) -> list[str]:
    """Names of the splits of a dataset that hold data files (sorted)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        return []
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".") and find_shard_dirs(child)
    )


def validate_split_name(name: str) -> str:
    if not isinstance(name, str) or not SPLIT_NAME_PATTERN.fullmatch(name) or SHARD_DIR_PATTERN.fullmatch(name):
        raise ValueError(f"invalid split name {name!r}: use letters, digits, '_', '-', '.' (e.g. 'train', 'val')")
    return name
