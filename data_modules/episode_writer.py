"""Write a binary episode dataset (docs/design.md section 2) atomically.

::

    with DatasetWriter("data/sft_phase3", weighted=True, packed=False,
                       tokenizer_state=tok.state(), sources=[{"path": "phase3.jsonl"}],
                       command=" ".join(sys.argv)) as writer:
        train = writer.split("train")
        for tokens, weights in episodes:
            train.add_episode(tokens, weights)

Everything is written into a temporary directory beside ``dataset_dir``; only a with-block
that finishes without an exception moves it into place (an existing dataset is replaced in
one rename, and only with ``overwrite=True``). On an exception the temporary directory is
removed and ``dataset_dir`` is exactly as it was. Appends are buffered and flushed to the
open files, so memory stays flat however large the dataset grows.

Masks: ``mask.bin`` (uint8, 1 where the weight is > 0) is always written, so legacy readers
keep working; weighted datasets also get ``mask_weighted.bin`` (float32). A binary dataset
accepts weighted inputs and stores 1 wherever the weight is > 0 (docs/design.md section 1).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

from .atomic_write import fsync_dir, make_temp_dir, move_into_place, write_json
from .episode_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_DTYPE,
    INDEX_FILE,
    MASK_DTYPE,
    MASK_FILE,
    MASK_WEIGHTED_FILE,
    MAX_SEGMENTS_PER_BLOCK,
    METADATA_FILE,
    SEGMENT_DTYPE,
    SEGMENT_IDS_FILE,
    TOKEN_DTYPE,
    TOKENIZER_STATE_FILE,
    TOKENS_FILE,
    WEIGHT_DTYPE,
    shard_dir_name,
    validate_split_name,
)

BUFFER_TOKENS = 1 << 20  # flush to disk every ~1M tokens (~10 MB of buffers at most)

RESERVED_METADATA_KEYS = frozenset(
    {
        "format",
        "format_version",
        "packed",
        "weighted",
        "block_size",
        "has_loss_mask",
        "tokenizer",
        "splits",
        "sources",
        "command",
        "created_at",
    }
)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _as_tokens(tokens: Any, vocab_size: int) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        bad = int(array[(array < 0) | (array >= vocab_size)][0])
        raise ValueError(f"token id {bad} is outside [0, {vocab_size})")
    return array.astype(TOKEN_DTYPE, copy=False)


def _as_weights(weights: Any, length: int) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float32)
    if array.shape != (length,):
        raise ValueError(f"weights must have shape ({length},) like the tokens, got {array.shape}")
    if not np.all(np.isfinite(array) & (array >= 0)):
        raise ValueError("weights must be finite and >= 0")
    return array


class SplitWriter:
    """Appends samples to one split; obtained from :meth:`DatasetWriter.split`."""

    def __init__(
        self,
        split_dir: Path,
        *,
        weighted: bool,
        packed: bool,
        block_size: int | None,
        tokens_per_shard: int | None,
        vocab_size: int,
    ):
        self.split_dir = split_dir
        self.weighted = weighted
        self.packed = packed
        self.block_size = block_size
        self.tokens_per_shard = tokens_per_shard
        self.vocab_size = vocab_size
        # totals
        self.samples = 0
        self.episodes = 0
        self.tokens = 0
        self.supervised_tokens = 0
        self.weight_sum = 0.0
        self.shards = 0
        # current shard
        self._files: dict[str, BinaryIO] = {}
        self._shard_tokens = 0
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._closed = False
        split_dir.mkdir(parents=True)

    # ------------------------------------------------------------------ public
    def add_episode(self, tokens: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray) -> None:
        """Append one episode (unpacked datasets): ``weights[i]`` is the weight of predicting ``tokens[i]``."""
        if self.packed:
            raise ValueError("this dataset is packed: use add_block(tokens, weights, segment_ids)")
        token_array = _as_tokens(tokens, self.vocab_size)
        if token_array.size == 0:
            raise ValueError("an episode needs at least one token")
        self._append(token_array, _as_weights(weights, token_array.size), None)
        self.episodes += 1

    def add_block(
        self,
        tokens: Sequence[int] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
        segment_ids: Sequence[int] | np.ndarray,
    ) -> None:
        """Append one packed block of exactly ``block_size`` tokens (see packing.build_packed_block)."""
        if not self.packed:
            raise ValueError("this dataset is not packed: use add_episode(tokens, weights)")
        token_array = _as_tokens(tokens, self.vocab_size)
        if token_array.size != self.block_size:
            raise ValueError(
                f"a packed block must have exactly block_size={self.block_size} tokens, got {token_array.size}"
            )
        weight_array = _as_weights(weights, token_array.size)
        segments = np.asarray(segment_ids)
        if segments.shape != token_array.shape or (segments.size and not np.issubdtype(segments.dtype, np.integer)):
            raise ValueError(
                f"segment_ids must be integers of shape {token_array.shape}, got {segments.dtype} {segments.shape}"
            )
        if segments.min() < 0 or segments.max() > MAX_SEGMENTS_PER_BLOCK:
            raise ValueError(f"segment ids must lie in [0, {MAX_SEGMENTS_PER_BLOCK}] (0 = padding)")
        if np.any(weight_array[segments == 0] != 0):
            raise ValueError("padding positions (segment 0) must have weight 0")
        starts = (segments != 0) & np.concatenate([[True], segments[1:] != segments[:-1]])
        self._append(token_array, weight_array, segments.astype(SEGMENT_DTYPE))
        self.episodes += int(starts.sum())

    # ------------------------------------------------------------------ internals
    def _append(self, tokens: np.ndarray, weights: np.ndarray, segments: np.ndarray | None) -> None:
        if self._closed:
            raise RuntimeError(f"split writer for {self.split_dir.name!r} is closed")
        n = tokens.size
        if self.tokens_per_shard is not None and self._shard_tokens and self._shard_tokens + n > self.tokens_per_shard:
            self._close_shard()
        if not self._files:
            self._open_shard()
        record = np.array([self._shard_tokens, n], dtype=INDEX_DTYPE)
        parts = {
            TOKENS_FILE: tokens,
            MASK_FILE: (weights > 0).astype(MASK_DTYPE),
            INDEX_FILE: record,
        }
        if self.weighted:
            parts[MASK_WEIGHTED_FILE] = weights.astype(WEIGHT_DTYPE)
        if segments is not None:
            parts[SEGMENT_IDS_FILE] = segments
        for name, array in parts.items():
            self._buffers[name].append(array)
        self._buffered += n
        self._shard_tokens += n
        self.samples += 1
        self.tokens += n
        self.supervised_tokens += int(np.count_nonzero(weights))
        self.weight_sum += float(weights.sum(dtype=np.float64))
        if self._buffered >= BUFFER_TOKENS:
            self._flush()

    def _open_shard(self) -> None:
        directory = self.split_dir
        if self.tokens_per_shard is not None:
            directory = self.split_dir / shard_dir_name(self.shards)
            directory.mkdir()
        names = [TOKENS_FILE, MASK_FILE, INDEX_FILE]
        if self.weighted:
            names.append(MASK_WEIGHTED_FILE)
        if self.packed:
            names.append(SEGMENT_IDS_FILE)
        self._files = {name: open(directory / name, "wb") for name in names}
        self._buffers = {name: [] for name in names}
        self._shard_tokens = 0
        self.shards += 1

    def _flush(self) -> None:
        for name, arrays in self._buffers.items():
            if arrays:
                self._files[name].write(np.concatenate(arrays).tobytes())
                arrays.clear()
        self._buffered = 0

    def _close_shard(self) -> None:
        self._flush()
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._files = {}

    def close(self) -> None:
        """Flush and close (an empty split still gets its, empty, files)."""
        if self._closed:
            return
        if not self._files and self.shards == 0:
            self._open_shard()
        if self._files:
            self._close_shard()
        self._closed = True

    def abort(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files = {}
        self._closed = True

    def counts(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "episodes": self.episodes,
            "tokens": self.tokens,
            "supervised_tokens": self.supervised_tokens,
            "weight_sum": self.weight_sum,
            "shards": self.shards,  # the top-level file group of an unsharded split counts as one
        }


class DatasetWriter:
    """Context manager that writes a dataset directory atomically (see the module docstring).

    ``tokens_per_shard`` writes ``split/shard_00000/...`` directories of at most that many
    tokens each (a single larger sample gets a shard of its own); None writes the files
    directly into the split directory. ``sources`` are dicts with a ``path`` (hashed now,
    before any data is read) or a precomputed ``sha256``, plus any other fields.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        *,
        weighted: bool,
        packed: bool,
        block_size: int | None = None,
        tokenizer_state: dict | None = None,
        sources: list[dict] | None = None,
        command: str | None = None,
        extra_metadata: dict | None = None,
        overwrite: bool = False,
        tokens_per_shard: int | None = None,
        tokenizer_name: str | None = None,
        vocab_size: int = TOKENIZER_VOCAB_SIZE,
    ):
        self.dataset_dir = Path(dataset_dir)
        self.weighted = bool(weighted)
        self.packed = bool(packed)
        if packed and (block_size is None or block_size < 2):
            raise ValueError(f"a packed dataset needs block_size >= 2, got {block_size}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if tokens_per_shard is not None and tokens_per_shard < 1:
            raise ValueError(f"tokens_per_shard must be positive, got {tokens_per_shard}")
        self.block_size = block_size
        self.tokens_per_shard = tokens_per_shard
        self.vocab_size = vocab_size
        self.overwrite = overwrite
        self.tokenizer_state = tokenizer_state
        self.tokenizer_name = tokenizer_name or _tokenizer_name(tokenizer_state)
        self.command = command
        self.extra_metadata = dict(extra_metadata or {})
        clash = RESERVED_METADATA_KEYS & set(self.extra_metadata)
        if clash:
            raise ValueError(f"extra_metadata may not set reserved keys {sorted(clash)}")
        self._check_destination()
        self.sources = [_describe_source(source) for source in (sources or [])]
        self._splits: dict[str, SplitWriter] = {}
        self._tmp_dir: Path | None = None
        self._done = False

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "DatasetWriter":
        if self._tmp_dir is not None or self._done:
            raise RuntimeError("a DatasetWriter can be entered once")
        self.dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = make_temp_dir(self.dataset_dir)  # also removes a killed writer's leftovers
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._commit()
        finally:
            self._done = True
            for writer in self._splits.values():
                writer.abort()
            if self._tmp_dir is not None and self._tmp_dir.exists():
                shutil.rmtree(self._tmp_dir, ignore_errors=True)
        return False

    def split(self, name: str) -> SplitWriter:
        if self._tmp_dir is None or self._done:
            raise RuntimeError("use DatasetWriter as a context manager: `with DatasetWriter(...) as w: w.split(...)`")
        validate_split_name(name)
        if name not in self._splits:
            self._splits[name] = SplitWriter(
                self._tmp_dir / name,
                weighted=self.weighted,
                packed=self.packed,
                block_size=self.block_size,
                tokens_per_shard=self.tokens_per_shard,
                vocab_size=self.vocab_size,
            )
        return self._splits[name]

    # ------------------------------------------------------------------ internals
    def _check_destination(self) -> None:
        target = self.dataset_dir
        if not target.exists() and not target.is_symlink():
            return
        if not self.overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        if target.is_symlink() or not target.is_dir():
            raise FileExistsError(f"{target} exists and is not a directory; refusing to replace it")
        # Never rm -rf something that is not a dataset (e.g. a typo pointing at $HOME).
        if any(target.iterdir()) and not (target / METADATA_FILE).is_file():
            raise FileExistsError(f"{target} is a non-empty directory without {METADATA_FILE}; refusing to replace it")

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "packed": self.packed,
            "weighted": self.weighted,
            "block_size": self.block_size,
            "has_loss_mask": True,
            "tokenizer": self.tokenizer_name,
            "splits": {name: writer.counts() for name, writer in self._splits.items()},
            "sources": self.sources,
            "command": self.command,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        metadata.update(self.extra_metadata)
        return metadata

    def _commit(self) -> None:
        assert self._tmp_dir is not None
        for writer in self._splits.values():
            writer.close()
        if self.tokenizer_state is not None:
            write_json(self._tmp_dir / TOKENIZER_STATE_FILE, self.tokenizer_state)
        write_json(self._tmp_dir / METADATA_FILE, self.metadata())
        fsync_dir(self._tmp_dir)
        self._check_destination()  # the world may have changed while we were writing
        move_into_place(self._tmp_dir, self.dataset_dir)


def _tokenizer_name(state: dict | None) -> str | None:
    if not state:
        return None
    for key in ("name", "encoding", "encoding_name", "tokenization", "token_kind"):
        value = state.get(key)
        if isinstance(value, str):
            return value
    return None


def _describe_source(source: dict) -> dict:
    if not isinstance(source, dict):
        raise TypeError(f"each source must be a dict with a 'path' or 'sha256', got {source!r}")
    described = dict(source)
    if "sha256" not in described:
        path = described.get("path")
        if path is None:
            raise ValueError(f"source {source!r} has neither 'path' nor 'sha256'")
        if not Path(path).is_file():
            raise FileNotFoundError(f"source file {path} does not exist (needed for its sha256)")
        described["path"] = str(path)
        described["sha256"] = sha256_file(path)
    return described
