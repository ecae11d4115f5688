"""Read one split of a binary episode dataset (docs/design.md section 2) with memory maps.

Everything that can be checked cheaply is checked when the dataset is opened, so a bad
dataset fails before training starts, with a :class:`DatasetFormatError` naming the file
and the reason: metadata, file sizes, and an index whose records tile tokens.bin (in
order, back to back, none empty; packed: every record block_size long). That costs
O(index), whatever the size of tokens.bin.

The token-range scan reads tokens.bin once (vectorised, in chunks); turn it off with
``check_tokens=False`` (training does: validate_sft_dataset runs the full scan). With
``check_samples=True`` each sample's ids and weights are checked as it is read instead
(a few microseconds per sample), so a bad id stops training with a named error rather
than an embedding index error or a CUDA device assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

from .episode_format import (
    INDEX_DTYPE,
    INDEX_FILE,
    INDEX_RECORD_BYTES,
    MASK_DTYPE,
    MASK_FILE,
    MASK_WEIGHTED_FILE,
    METADATA_FILE,
    SEGMENT_DTYPE,
    SEGMENT_IDS_FILE,
    TOKEN_DTYPE,
    TOKENS_FILE,
    WEIGHT_DTYPE,
    DatasetFormatError,
    DatasetMetadata,
    find_shard_dirs,
    list_splits,
    load_metadata,
)

SCAN_CHUNK = 1 << 24  # elements per vectorised validation step (64 MiB of uint32)


@dataclass
class _Shard:
    directory: Path
    num_tokens: int
    index: np.ndarray  # (N, 2) int64: start, length
    weights_file: str  # MASK_WEIGHTED_FILE or MASK_FILE
    has_segments: bool


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _expect_elements(path: Path, dtype: np.dtype, num_tokens: int, what: str) -> None:
    size = path.stat().st_size
    if size != num_tokens * dtype.itemsize:
        raise DatasetFormatError(
            path,
            f"size mismatch: {size} bytes = {size / dtype.itemsize:g} {what} values, "
            f"but {TOKENS_FILE} holds {num_tokens} tokens ({num_tokens * dtype.itemsize} bytes expected)",
        )


def _read_index(path: Path, num_tokens: int) -> np.ndarray:
    size = path.stat().st_size
    if size % INDEX_RECORD_BYTES:
        raise DatasetFormatError(
            path, f"size {size} bytes is not a multiple of {INDEX_RECORD_BYTES} (uint64 start, length pairs)"
        )
    raw = np.fromfile(path, dtype=INDEX_DTYPE).reshape(-1, 2)
    if raw.size == 0:
        if num_tokens:
            raise DatasetFormatError(path, f"holds no records but {TOKENS_FILE} holds {num_tokens} tokens")
        return np.zeros((0, 2), dtype=np.int64)
    # Anything >= 2**62 cannot be a real offset; checking first keeps the int64 sums exact.
    too_big = np.flatnonzero((raw >= (1 << 62)).any(axis=1))
    if too_big.size:
        i = int(too_big[0])
        raise DatasetFormatError(
            path, f"record #{i} (start={int(raw[i, 0])}, length={int(raw[i, 1])}) is out of range"
        )
    index = raw.astype(np.int64)
    starts, lengths = index[:, 0], index[:, 1]
    ends = starts + lengths
    empty = np.flatnonzero(lengths < 1)
    if empty.size:
        i = int(empty[0])
        raise DatasetFormatError(
            path, f"record #{i} (start={int(starts[i])}, length=0) is empty: every sample needs at least one token"
        )
    bad = np.flatnonzero(ends > num_tokens)
    if bad.size:
        i = int(bad[0])
        contiguous = starts[0] == 0 and np.array_equal(starts[1:], ends[:-1])
        if contiguous:
            # The index is self-consistent and simply runs past the end of the tokens.
            raise DatasetFormatError(
                path.with_name(TOKENS_FILE),
                f"truncated: {INDEX_FILE} describes {int(ends[-1])} tokens but the file holds only "
                f"{num_tokens} ({num_tokens * TOKEN_DTYPE.itemsize} bytes); first incomplete sample is #{i}",
            )
        raise DatasetFormatError(
            path,
            f"record #{i} (start={int(starts[i])}, length={int(lengths[i])}) is out of range: it ends at "
            f"token {int(ends[i])} but {TOKENS_FILE} holds {num_tokens} tokens",
        )
    _check_back_to_back(path, starts, lengths, ends, num_tokens)
    return index


def _check_back_to_back(path: Path, starts: np.ndarray, lengths: np.ndarray, ends: np.ndarray, num_tokens: int) -> None:
    """Records must tile tokens.bin in order: an overlap, a gap or a trailing rest means a
    damaged index, and training on it would silently lose or repeat an episode."""
    expected = np.concatenate([[0], ends[:-1]])
    off = np.flatnonzero(starts != expected)
    if off.size:
        i = int(off[0])
        record = f"record #{i} (start={int(starts[i])}, length={int(lengths[i])})"
        if i == 0:
            where = "the first record must start at token 0"
        elif starts[i] < expected[i]:
            where = f"it overlaps record #{i - 1}, which ends at token {int(expected[i])}"
        else:
            where = f"tokens {int(expected[i])}..{int(starts[i]) - 1} lie in no record"
        raise DatasetFormatError(path, f"{record} is misplaced: {where} (records must tile {TOKENS_FILE} in order)")
    covered = int(ends[-1]) if ends.size else 0
    if covered != num_tokens:
        raise DatasetFormatError(
            path,
            f"the {len(starts)} records end at token {covered} but {TOKENS_FILE} holds {num_tokens} tokens: "
            f"tokens {covered}..{num_tokens - 1} lie in no record (records missing from the end of {INDEX_FILE}?)",
        )


def _scan(path: Path, dtype: np.dtype, check, describe) -> None:
    """Run ``check(chunk) -> bad positions`` over a file in chunks; raise on the first bad value."""
    data = _memmap(path, dtype)
    for offset in range(0, len(data), SCAN_CHUNK):
        chunk = np.asarray(data[offset : offset + SCAN_CHUNK])
        bad = check(chunk)
        if bad.size:
            position = int(bad[0])
            raise DatasetFormatError(path, describe(chunk[position], offset + position))
    del data


def _open_shard(directory: Path, check_tokens: bool, vocab_size: int) -> _Shard:
    tokens_path = directory / TOKENS_FILE
    index_path = directory / INDEX_FILE
    for path in (tokens_path, index_path):
        if not path.is_file():
            raise DatasetFormatError(path, "missing file")
    size = tokens_path.stat().st_size
    if size % TOKEN_DTYPE.itemsize:
        raise DatasetFormatError(
            tokens_path, f"truncated: size {size} bytes is not a multiple of {TOKEN_DTYPE.itemsize} (uint32 tokens)"
        )
    num_tokens = size // TOKEN_DTYPE.itemsize
    index = _read_index(index_path, num_tokens)

    mask_path, weighted_path, segments_path = (directory / n for n in (MASK_FILE, MASK_WEIGHTED_FILE, SEGMENT_IDS_FILE))
    if mask_path.exists():
        _expect_elements(mask_path, MASK_DTYPE, num_tokens, "uint8 mask")
    if weighted_path.exists():
        _expect_elements(weighted_path, WEIGHT_DTYPE, num_tokens, "float32 weight")
    elif not mask_path.exists():
        raise DatasetFormatError(directory, f"no loss mask: neither {MASK_FILE} nor {MASK_WEIGHTED_FILE} exists")
    if segments_path.exists():
        _expect_elements(segments_path, SEGMENT_DTYPE, num_tokens, "uint8 segment id")

    if check_tokens:
        _scan(
            tokens_path,
            TOKEN_DTYPE,
            lambda c: np.flatnonzero(c >= vocab_size) if c.size and c.max() >= vocab_size else np.zeros(0, int),
            lambda v, p: f"token id {int(v)} at position {p} is >= the vocabulary size {vocab_size}",
        )
        if weighted_path.exists():
            _scan(
                weighted_path,
                WEIGHT_DTYPE,
                lambda c: np.flatnonzero(~(np.isfinite(c) & (c >= 0))),
                lambda v, p: f"weight {float(v)} at position {p} is not a finite value >= 0",
            )
        else:
            _scan(
                mask_path,
                MASK_DTYPE,
                lambda c: np.flatnonzero(c > 1) if c.size and c.max() > 1 else np.zeros(0, int),
                lambda v, p: f"mask value {int(v)} at position {p} is not 0 or 1",
            )
    return _Shard(
        directory=directory,
        num_tokens=num_tokens,
        index=index,
        weights_file=MASK_WEIGHTED_FILE if weighted_path.exists() else MASK_FILE,
        has_segments=segments_path.exists(),
    )


def resolve_split(path: str | Path, split: str) -> tuple[Path, str]:
    """(dataset_dir, split) for a dataset directory or a split directory such as ``DATASET/val``."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetFormatError(root, "dataset directory does not exist")
    if (root / METADATA_FILE).exists() or (root / split).is_dir():
        return root, split
    if (root.parent / METADATA_FILE).exists() and find_shard_dirs(root):
        return root.parent, root.name  # a split directory was given
    return root, split  # load_metadata reports what is missing


class EpisodeDataset(Dataset):
    """One split of a binary episode dataset; ``ds[i]`` is the i-th sample (episode or packed block).

    Returns numpy arrays: ``tokens`` (L,) int64, ``weights`` (L,) float32 (mask_weighted.bin if
    present, else mask.bin), ``segment_ids`` (L,) int64 for packed datasets else None. With
    ``max_length`` a longer sample keeps its first ``max_length`` tokens (``truncate="tail"``:
    its last ones, as the original MyPT packer did).

    Memory maps are opened lazily per process (and dropped when pickled), so the dataset can
    be sent to DataLoader workers with any start method.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        max_length: int | None = None,
        check_tokens: bool = True,
        vocab_size: int = TOKENIZER_VOCAB_SIZE,
        check_samples: bool = False,
        truncate: str = "head",
    ):
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if truncate not in ("head", "tail"):
            raise ValueError(f"truncate must be 'head' or 'tail', got {truncate!r}")
        self.truncate = truncate
        self.dataset_dir, self.split = resolve_split(path, split)
        self.split_dir = self.dataset_dir / self.split
        self.max_length = max_length
        self.vocab_size = int(vocab_size)
        self.check_samples = bool(check_samples)
        self.metadata: DatasetMetadata = load_metadata(self.dataset_dir)

        shard_dirs = find_shard_dirs(self.split_dir) if self.split_dir.is_dir() else []
        if not shard_dirs:
            available = list_splits(self.dataset_dir)
            raise DatasetFormatError(
                self.split_dir, f"split {self.split!r} is missing (splits with data: {available or 'none'})"
            )
        self._shards = [_open_shard(d, check_tokens, vocab_size) for d in shard_dirs]
        counts = np.array([len(s.index) for s in self._shards], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._check_against_metadata()

    # ------------------------------------------------------------------ validation
    def _check_against_metadata(self) -> None:
        meta, shards = self.metadata, self._shards
        has_segments = [s.has_segments for s in shards]
        has_weighted = [s.weights_file == MASK_WEIGHTED_FILE for s in shards]

        if meta.packed is True and not all(has_segments):
            where = shards[has_segments.index(False)].directory / SEGMENT_IDS_FILE
            raise DatasetFormatError(where, "missing: the metadata says the dataset is packed")
        if meta.packed is False and any(has_segments):
            where = shards[has_segments.index(True)].directory / SEGMENT_IDS_FILE
            raise DatasetFormatError(where, f"present, but {METADATA_FILE} says the dataset is not packed")
        if meta.packed is None and any(has_segments) and not all(has_segments):
            raise DatasetFormatError(self.split_dir, f"only some shards have {SEGMENT_IDS_FILE}")
        self.packed: bool = all(has_segments)

        if meta.weighted is True and not all(has_weighted):
            where = shards[has_weighted.index(False)].directory / MASK_WEIGHTED_FILE
            raise DatasetFormatError(where, "missing: the metadata says the dataset is weighted")
        if meta.weighted is False and any(has_weighted):
            where = shards[has_weighted.index(True)].directory / MASK_WEIGHTED_FILE
            raise DatasetFormatError(where, f"present, but {METADATA_FILE} says the dataset is not weighted")
        if meta.weighted is None and any(has_weighted) and not all(has_weighted):
            raise DatasetFormatError(self.split_dir, f"only some shards have {MASK_WEIGHTED_FILE}")
        self.weighted: bool = all(has_weighted)

        self.block_size: int | None = meta.block_size if self.packed else None
        if self.packed:
            lengths = self.sample_lengths()
            if lengths.size:
                expected = meta.block_size if meta.block_size is not None else int(lengths[0])
                bad = np.flatnonzero(lengths != expected)
                if bad.size:
                    i = int(bad[0])
                    shard, local = self._locate(i)
                    source = "block_size in " + METADATA_FILE if meta.block_size is not None else "the first block"
                    raise DatasetFormatError(
                        shard.directory / INDEX_FILE,
                        f"packed sample #{local} has {int(lengths[i])} tokens, but {source} says {expected}",
                    )
                self.block_size = expected

        counts = meta.split_counts(self.split)
        actual = {"samples": len(self), "tokens": self.num_tokens, "shards": len(shards)}
        for field, found in actual.items():
            expected = getattr(counts, field)
            if expected is not None and expected != found:
                raise DatasetFormatError(
                    meta.path,
                    f"split {self.split!r}: metadata says {expected} {field}, the files hold {found} "
                    f"(in {self.split_dir})",
                )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self._shards)

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def sample_lengths(self) -> np.ndarray:
        """Stored length of every sample (before ``max_length``), int64 (N,)."""
        if not self._shards:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.index[:, 1] for s in self._shards])

    def _locate(self, i: int) -> tuple[_Shard, int]:
        shard_id = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self._shards[shard_id], i - int(self._offsets[shard_id])

    def _arrays(self, shard_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        arrays = self._maps.get(shard_id)
        if arrays is None:
            shard = self._shards[shard_id]
            weights_dtype = WEIGHT_DTYPE if shard.weights_file == MASK_WEIGHTED_FILE else MASK_DTYPE
            arrays = (
                _memmap(shard.directory / TOKENS_FILE, TOKEN_DTYPE),
                _memmap(shard.directory / shard.weights_file, weights_dtype),
                _memmap(shard.directory / SEGMENT_IDS_FILE, SEGMENT_DTYPE) if self.packed else None,
            )
            self._maps[shard_id] = arrays
        return arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples in {self.split_dir}")
        shard_id = int(np.searchsorted(self._offsets, i, side="right")) - 1
        start, length = (int(v) for v in self._shards[shard_id].index[i - int(self._offsets[shard_id])])
        if self.max_length is not None and length > self.max_length:
            if self.truncate == "tail":
                start += length - self.max_length
            length = self.max_length
        tokens, weights, segments = self._arrays(shard_id)
        end = start + length
        sample = {
            "tokens": np.asarray(tokens[start:end], dtype=np.int64),
            "weights": np.asarray(weights[start:end], dtype=np.float32),
            "segment_ids": None if segments is None else np.asarray(segments[start:end], dtype=np.int64),
        }
        if self.check_samples:
            self._check_sample(shard_id, i - int(self._offsets[shard_id]), start, sample)
        return sample

    def _check_sample(self, shard_id: int, local: int, start: int, sample: dict[str, Any]) -> None:
        shard = self._shards[shard_id]
        tokens, weights = sample["tokens"], sample["weights"]
        if tokens.size and int(tokens.max()) >= self.vocab_size:
            p = int(np.flatnonzero(tokens >= self.vocab_size)[0])
            raise DatasetFormatError(
                shard.directory / TOKENS_FILE,
                f"token id {int(tokens[p])} at position {start + p} (sample #{local}) is >= the vocabulary "
                f"size {self.vocab_size}; run tools/validate_sft_dataset.py on the dataset",
            )
        if shard.weights_file == MASK_FILE:
            bad = np.flatnonzero(weights > 1)  # uint8 0/1
        else:
            bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
        if bad.size:
            p = int(bad[0])
            raise DatasetFormatError(
                shard.directory / shard.weights_file,
                f"weight {float(weights[p]):g} at position {start + p} (sample #{local}) is not "
                + ("0 or 1" if shard.weights_file == MASK_FILE else "a finite value >= 0"),
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle memory maps (that would copy the data)
        return state

    def __repr__(self) -> str:
        kind = f"packed block_size={self.block_size}" if self.packed else "unpacked"
        return (
            f"EpisodeDataset({str(self.split_dir)!r}, samples={len(self)}, tokens={self.num_tokens}, "
            f"{kind}, weighted={self.weighted}, shards={self.num_shards})"
        )
