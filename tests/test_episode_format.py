"""Binary episode format: writer -> reader round trips, the legacy layout, and one clear error per corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_modules import DatasetFormatError, DatasetWriter, EpisodeDataset, load_metadata
from data_modules.packing import build_packed_block
from mypt_lightning.tokens.special_tokens import PAD_ID, TOKENIZER_VOCAB_SIZE


def random_episodes(rng: np.random.Generator, count: int, low: int = 2, high: int = 12, weighted: bool = True):
    episodes = []
    for _ in range(count):
        n = int(rng.integers(low, high))
        tokens = rng.integers(0, TOKENIZER_VOCAB_SIZE, size=n)
        choices = [0.0, 1.0, 1.5, 2.0] if weighted else [0.0, 1.0]
        weights = rng.choice(choices, size=n).astype(np.float32)
        episodes.append((tokens, weights))
    return episodes


def write_dataset(path: Path, splits: dict, *, weighted: bool, packed: bool, block_size=None, **kwargs) -> Path:
    """splits: name -> list of (tokens, weights) episodes, or (tokens, weights, segment_ids) blocks."""
    with DatasetWriter(path, weighted=weighted, packed=packed, block_size=block_size, **kwargs) as writer:
        for name, samples in splits.items():
            split = writer.split(name)
            for sample in samples:
                if packed:
                    split.add_block(*sample)
                else:
                    split.add_episode(*sample)
    return path


def pack_in_order(episodes, block_size):
    blocks, current, used = [], [], 0
    for tokens, weights in episodes:
        if used + len(tokens) > block_size:
            blocks.append(build_packed_block(current, block_size))
            current, used = [], 0
        current.append((tokens, weights))
        used += len(tokens)
    if current:
        blocks.append(build_packed_block(current, block_size))
    return blocks


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("tokens_per_shard", [None, 40])
def test_round_trip(tmp_path, weighted, packed, tokens_per_shard):
    rng = np.random.default_rng(0)
    episodes = {name: random_episodes(rng, n, weighted=weighted) for name, n in (("train", 23), ("val", 5))}
    block_size = 16 if packed else None
    samples = {name: pack_in_order(eps, 16) if packed else eps for name, eps in episodes.items()}
    path = write_dataset(
        tmp_path / "ds",
        samples,
        weighted=weighted,
        packed=packed,
        block_size=block_size,
        tokens_per_shard=tokens_per_shard,
        tokenizer_state={"name": "r50k_base+mypt"},
        command="pytest",
        extra_metadata={"note": "test"},
    )
    for name, expected in samples.items():
        ds = EpisodeDataset(path, name)
        assert len(ds) == len(expected)
        assert ds.packed is packed and ds.weighted is weighted and ds.block_size == block_size
        assert ds.num_tokens == sum(len(s[0]) for s in expected)
        if tokens_per_shard is not None and name == "train":
            assert ds.num_shards > 1
            assert (path / name / "shard_00000" / "tokens.bin").is_file()
        for i, sample in enumerate(expected):
            item = ds[i]
            assert item["tokens"].dtype == np.int64 and item["weights"].dtype == np.float32
            np.testing.assert_array_equal(item["tokens"], sample[0])
            want = sample[1] if weighted else (np.asarray(sample[1]) > 0).astype(np.float32)
            np.testing.assert_array_equal(item["weights"], want)
            if packed:
                assert item["segment_ids"].dtype == np.int64
                np.testing.assert_array_equal(item["segment_ids"], sample[2])
            else:
                assert item["segment_ids"] is None
        assert ds[-1]["tokens"].tolist() == list(expected[-1][0])

    meta = json.loads((path / "dataset_metadata.json").read_text())
    assert meta["format_version"] == 1 and meta["packed"] is packed and meta["weighted"] is weighted
    assert meta["splits"]["train"]["samples"] == len(samples["train"])
    assert meta["splits"]["train"]["episodes"] == len(episodes["train"])
    assert meta["splits"]["train"]["supervised_tokens"] == sum(int((w > 0).sum()) for _, w in episodes["train"])
    assert meta["tokenizer"] == "r50k_base+mypt" and meta["command"] == "pytest" and meta["note"] == "test"
    assert json.loads((path / "tokenizer_state.json").read_text()) == {"name": "r50k_base+mypt"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"


def test_split_dir_path_and_max_length(tmp_path):
    splits = {"train": [([1, 2, 3, 4, 5], [0, 1, 1, 1, 1])], "val": [([7, 8, 9], [0, 1, 1])]}
    path = write_dataset(tmp_path / "ds", splits, weighted=False, packed=False)
    val = EpisodeDataset(path / "val")
    assert val.split == "val" and val[0]["tokens"].tolist() == [7, 8, 9]
    cut = EpisodeDataset(path, "train", max_length=3)
    assert cut[0]["tokens"].tolist() == [1, 2, 3] and cut.sample_lengths().tolist() == [5]
    with pytest.raises(IndexError):
        cut[1]


def test_sources_are_hashed(tmp_path):
    source = tmp_path / "episodes.jsonl"
    source.write_text('{"system": "x"}\n')
    path = write_dataset(tmp_path / "ds", {"train": [([1, 2], [0, 1])]}, weighted=False, packed=False,
                         sources=[{"path": str(source), "kind": "jsonl"}])
    (entry,) = load_metadata(path).raw["sources"]
    import hashlib

    assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest() and entry["kind"] == "jsonl"
    with pytest.raises(FileNotFoundError):
        DatasetWriter(tmp_path / "other", weighted=False, packed=False, sources=[{"path": str(tmp_path / "nope")}])


def test_writer_rejects_bad_samples(tmp_path):
    with DatasetWriter(tmp_path / "u", weighted=True, packed=False) as writer:
        split = writer.split("train")
        with pytest.raises(ValueError, match="outside"):
            split.add_episode([1, TOKENIZER_VOCAB_SIZE], [1, 1])
        with pytest.raises(ValueError, match="shape"):
            split.add_episode([1, 2, 3], [1, 1])
        with pytest.raises(ValueError, match="finite"):
            split.add_episode([1, 2], [1, float("nan")])
        with pytest.raises(ValueError, match="packed"):
            split.add_block([1, 2], [1, 1], [1, 1])
        split.add_episode([1, 2], [0, 1])
    with DatasetWriter(tmp_path / "p", weighted=True, packed=True, block_size=4) as writer:
        split = writer.split("train")
        with pytest.raises(ValueError, match="exactly block_size"):
            split.add_block([1, 2, 3], [1, 1, 1], [1, 1, 1])
        with pytest.raises(ValueError, match="padding positions"):
            split.add_block([1, 2, 3, PAD_ID], [1, 1, 1, 1], [1, 1, 1, 0])
        with pytest.raises(ValueError, match="not packed|add_block"):
            split.add_episode([1, 2], [1, 1])
        split.add_block([1, 2, 3, PAD_ID], [0, 1, 1, 0], [1, 1, 2, 0])
    assert EpisodeDataset(tmp_path / "p").block_size == 4


# --------------------------------------------------------------------------- atomic writes
def test_exception_leaves_existing_dataset_untouched(tmp_path):
    path = write_dataset(tmp_path / "ds", {"train": [([1, 2, 3], [0, 1, 1])]}, weighted=False, packed=False)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(path, weighted=True, packed=False, overwrite=True) as writer:
            writer.split("train").add_episode([5, 6, 7, 8], [0, 1, 2, 2])
            raise RuntimeError("boom")
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "temp dir left behind"
    assert EpisodeDataset(path)[0]["tokens"].tolist() == [1, 2, 3]


def test_exception_on_new_dataset_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with DatasetWriter(tmp_path / "new", weighted=False, packed=False) as writer:
            writer.split("train").add_episode([1, 2], [0, 1])
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path):
    path = write_dataset(tmp_path / "ds", {"train": [([1, 2, 3], [0, 1, 1])]}, weighted=False, packed=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        DatasetWriter(path, weighted=False, packed=False)
    write_dataset(path, {"train": [([9, 9], [0, 1])]}, weighted=True, packed=False, overwrite=True)
    replaced = EpisodeDataset(path)
    assert replaced.weighted and replaced[0]["tokens"].tolist() == [9, 9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="refusing"):
        DatasetWriter(precious, weighted=False, packed=False, overwrite=True)


# --------------------------------------------------------------------------- legacy layout
def _legacy_shard(directory: Path, blocks, with_weighted: bool = True, with_segments: bool = True):
    directory.mkdir(parents=True, exist_ok=True)
    tokens = np.concatenate([b[0] for b in blocks]).astype(np.uint32)
    weights = np.concatenate([b[1] for b in blocks]).astype(np.float32)
    tokens.tofile(directory / "tokens.bin")
    (weights > 0).astype(np.uint8).tofile(directory / "mask.bin")
    if with_weighted:
        weights.tofile(directory / "mask_weighted.bin")
    if with_segments:
        np.concatenate([b[2] for b in blocks]).astype(np.uint8).tofile(directory / "segment_ids.bin")
    lengths = [len(b[0]) for b in blocks]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    np.array(list(zip(starts, lengths)), dtype=np.uint64).tofile(directory / "episodes.idx")
    return len(tokens)


@pytest.mark.parametrize("first_shard_at_top", [True, False])
def test_legacy_packed_weighted_sharded_layout_loads(tmp_path, first_shard_at_top):
    """Built by hand with numpy the way the MyPT scripts wrote it (prepare_tool_sft.py --enable_packing
    --weighted_mask): uint8 segment ids, float32 mask_weighted.bin beside mask.bin, legacy metadata keys."""
    rng = np.random.default_rng(1)
    block = 12
    blocks = pack_in_order(random_episodes(rng, 30, 2, 8), block)
    root = tmp_path / "legacy"
    train = root / "train"
    first, second = blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]
    n0 = _legacy_shard(train if first_shard_at_top else train / "shard_00000", first)
    n1 = _legacy_shard(train / "shard_00001", second)
    (root / "val").mkdir()  # the legacy scripts always create val/, even when it stays empty
    (root / "tokenizer_state.json").write_text(json.dumps({"token_kind": "gpt2"}))
    (root / "dataset_metadata.json").write_text(json.dumps({
        "schema": "episode_indexed_sft_v1", "has_loss_mask": True, "dataset_type": "toolcall_sft",
        "num_train_episodes": len(blocks), "num_val_episodes": 0, "num_train_tokens": n0 + n1, "num_val_tokens": 0,
        "num_train_shards": 2, "num_val_shards": 0, "tokenization": "gpt2", "vocab_size": 50304,
        "weighted_mask": True, "packing_enabled": True, "pack_block_size": block,
    }))
    ds = EpisodeDataset(root, "train")
    assert len(ds) == len(blocks) and ds.packed and ds.weighted and ds.block_size == block and ds.num_shards == 2
    for i, (tokens, weights, segments) in enumerate(blocks):
        item = ds[i]
        np.testing.assert_array_equal(item["tokens"], tokens)
        np.testing.assert_array_equal(item["weights"], weights)  # float32 file wins over mask.bin
        np.testing.assert_array_equal(item["segment_ids"], segments)
    with pytest.raises(DatasetFormatError, match="split 'val' is missing"):
        EpisodeDataset(root, "val")


def test_legacy_unpacked_binary_minimal_metadata(tmp_path):
    """Oldest layout (prepare_chat_sft.py): mask.bin only, no packing/weighting keys."""
    rng = np.random.default_rng(2)
    episodes = random_episodes(rng, 7, weighted=False)
    root = tmp_path / "old"
    n = _legacy_shard(root / "train", [(t, w, None) for t, w in episodes], with_weighted=False, with_segments=False)
    (root / "dataset_metadata.json").write_text(json.dumps({"schema": "episode_indexed_sft_v1",
                                                            "num_train_episodes": 7, "num_train_tokens": n}))
    ds = EpisodeDataset(root)
    assert len(ds) == 7 and not ds.packed and not ds.weighted
    np.testing.assert_array_equal(ds[3]["weights"], episodes[3][1])


# --------------------------------------------------------------------------- corruption: one clear error each
@pytest.fixture
def packed_ds(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    blocks = pack_in_order(random_episodes(rng, 20, 2, 6), 10)
    return write_dataset(tmp_path / "ds", {"train": blocks}, weighted=True, packed=True, block_size=10)


def _edit_metadata(path: Path, **changes):
    meta = json.loads((path / "dataset_metadata.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (path / "dataset_metadata.json").write_text(json.dumps(meta))


def _chop(file: Path, nbytes: int):
    data = file.read_bytes()
    file.write_bytes(data[:-nbytes])


def _expect(path, pattern, file_name=None, **kwargs):
    with pytest.raises(DatasetFormatError, match=pattern) as info:
        EpisodeDataset(path, **kwargs)
    if file_name is not None:
        assert info.value.path.name == file_name, info.value
    return info.value


def test_truncated_tokens_partial_token(packed_ds):
    _chop(packed_ds / "train" / "tokens.bin", 2)
    _expect(packed_ds, r"truncated: size \d+ bytes is not a multiple of 4", "tokens.bin")


def test_truncated_tokens_whole_tokens(packed_ds):
    _chop(packed_ds / "train" / "tokens.bin", 8)
    _expect(packed_ds, r"truncated: episodes.idx describes \d+ tokens but the file holds only", "tokens.bin")


def test_index_record_out_of_range(packed_ds):
    index_path = packed_ds / "train" / "episodes.idx"
    index = np.fromfile(index_path, dtype=np.uint64).reshape(-1, 2)
    index[2, 0] = 10_000
    index.tofile(index_path)
    _expect(packed_ds, r"record #2 \(start=10000, length=10\) is out of range", "episodes.idx")


def test_index_size_not_multiple_of_16(packed_ds):
    _chop(packed_ds / "train" / "episodes.idx", 8)
    _expect(packed_ds, "not a multiple of 16", "episodes.idx")


def _rewrite_index(path: Path, edit) -> None:
    index_path = path / "train" / "episodes.idx"
    index = np.fromfile(index_path, dtype=np.uint64).reshape(-1, 2).astype(np.int64)
    edit(index)
    index.astype(np.uint64).tofile(index_path)


def test_zero_length_index_record(packed_ds):
    def edit(index):
        index[3, 1] = 0
    _rewrite_index(packed_ds, edit)
    _expect(packed_ds, r"record #3 \(start=30, length=0\) is empty", "episodes.idx")


def test_overlapping_index_record(packed_ds):
    def edit(index):
        index[2, 0] -= 4
    _rewrite_index(packed_ds, edit)
    _expect(packed_ds, r"record #2 \(start=16, length=10\) is misplaced: it overlaps record #1, which ends at token 20",
            "episodes.idx")


def test_index_records_out_of_order(packed_ds):
    def edit(index):
        index[[1, 2]] = index[[2, 1]]
    _rewrite_index(packed_ds, edit)
    _expect(packed_ds, r"record #1 \(start=20, length=10\) is misplaced: tokens 10..19 lie in no record", "episodes.idx")


def test_index_missing_its_last_records(packed_ds):
    """Without counts in the metadata, a shortened index would silently drop the last samples."""
    _chop(packed_ds / "train" / "episodes.idx", 32)
    _edit_metadata(packed_ds, splits=None)
    _expect(packed_ds, r"records end at token \d+ but tokens.bin holds \d+ tokens", "episodes.idx")
    (packed_ds / "train" / "episodes.idx").write_bytes(b"")
    _expect(packed_ds, "holds no records but tokens.bin holds", "episodes.idx")


def test_single_token_episode_is_valid(tmp_path):
    path = write_dataset(tmp_path / "ds", {"train": [([5], [1.0]), ([1, 2], [0.0, 1.0])]}, weighted=True, packed=False)
    assert EpisodeDataset(path).sample_lengths().tolist() == [1, 2]


@pytest.mark.parametrize("content, kind", [("[]", "list"), ('"x"', "str"), ("3", "int"), ("null", "NoneType")])
def test_metadata_that_is_not_an_object(packed_ds, content, kind):
    (packed_ds / "dataset_metadata.json").write_text(content)
    _expect(packed_ds, f"must hold a JSON object, got {kind}", "dataset_metadata.json")


def test_hostile_metadata_json(packed_ds):
    (packed_ds / "dataset_metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    _expect(packed_ds, "not valid JSON", "dataset_metadata.json")
    (packed_ds / "dataset_metadata.json").write_text('{"format_version": ' + "9" * 10_000 + "}")
    _expect(packed_ds, "not readable JSON", "dataset_metadata.json")


def test_check_samples_names_a_bad_id_when_it_is_read(packed_ds):
    tokens_path = packed_ds / "train" / "tokens.bin"
    tokens = np.fromfile(tokens_path, dtype=np.uint32)
    tokens[23] = TOKENIZER_VOCAB_SIZE
    tokens.tofile(tokens_path)
    ds = EpisodeDataset(packed_ds, check_tokens=False, check_samples=True)
    ds[0]
    with pytest.raises(DatasetFormatError, match=rf"token id {TOKENIZER_VOCAB_SIZE} at position 23 \(sample #2\)") as info:
        ds[2]
    assert info.value.path.name == "tokens.bin"
    EpisodeDataset(packed_ds, check_tokens=False)[2]  # without check_samples: read as stored


def test_check_samples_names_a_bad_weight(packed_ds):
    path = packed_ds / "train" / "mask_weighted.bin"
    weights = np.fromfile(path, dtype=np.float32)
    weights[12] = np.nan
    weights.tofile(path)
    with pytest.raises(DatasetFormatError, match=r"weight nan at position 12 \(sample #1\)"):
        EpisodeDataset(packed_ds, check_tokens=False, check_samples=True)[1]


def test_dataset_format_error_survives_pickling_and_a_dataloader_worker(packed_ds):
    """torch re-raises a worker's exception as ``type(exc)(traceback_text)``; before, that
    failed for DatasetFormatError(path, reason) and became a RuntimeError."""
    import pickle

    from torch.utils.data import DataLoader

    error = DatasetFormatError(packed_ds / "a: b" / "tokens.bin", "token id 9 (sample #3): bad")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.path, again.reason) == (DatasetFormatError, error.path, error.reason)

    tokens_path = packed_ds / "train" / "tokens.bin"
    tokens = np.fromfile(tokens_path, dtype=np.uint32)
    tokens[23] = TOKENIZER_VOCAB_SIZE
    tokens.tofile(tokens_path)
    ds = EpisodeDataset(packed_ds, check_tokens=False, check_samples=True)
    loader = DataLoader(ds, batch_size=None, sampler=[2], num_workers=1)
    with pytest.raises(DatasetFormatError) as info:
        next(iter(loader))
    assert info.value.path == tokens_path
    assert info.value.reason.startswith(f"token id {TOKENIZER_VOCAB_SIZE} at position 23 (sample #2)")
    assert str(info.value) == f"{tokens_path}: {info.value.reason}"
    assert "DataLoader worker" in info.value.worker_traceback


@pytest.mark.parametrize("name", ["mask.bin", "mask_weighted.bin", "segment_ids.bin"])
def test_aligned_file_size_mismatch(packed_ds, name):
    _chop(packed_ds / "train" / name, 4)
    _expect(packed_ds, "size mismatch", name)


def test_token_id_out_of_vocab(packed_ds):
    tokens_path = packed_ds / "train" / "tokens.bin"
    tokens = np.fromfile(tokens_path, dtype=np.uint32)
    tokens[17] = TOKENIZER_VOCAB_SIZE + 3
    tokens.tofile(tokens_path)
    _expect(packed_ds, rf"token id {TOKENIZER_VOCAB_SIZE + 3} at position 17 is >= the vocabulary size", "tokens.bin")
    assert len(EpisodeDataset(packed_ds, check_tokens=False)) > 0


def test_bad_weight_value(packed_ds):
    path = packed_ds / "train" / "mask_weighted.bin"
    weights = np.fromfile(path, dtype=np.float32)
    weights[4] = -1.0
    weights.tofile(path)
    _expect(packed_ds, "weight -1.0 at position 4", "mask_weighted.bin")


def test_missing_metadata(packed_ds):
    (packed_ds / "dataset_metadata.json").unlink()
    _expect(packed_ds, "missing dataset metadata file", "dataset_metadata.json")


def test_metadata_not_json(packed_ds):
    (packed_ds / "dataset_metadata.json").write_text("{not json")
    _expect(packed_ds, "not valid JSON", "dataset_metadata.json")


def test_metadata_count_contradicts_files(packed_ds):
    meta = json.loads((packed_ds / "dataset_metadata.json").read_text())
    meta["splits"]["train"]["samples"] += 1
    (packed_ds / "dataset_metadata.json").write_text(json.dumps(meta))
    _expect(packed_ds, r"split 'train': metadata says \d+ samples, the files hold", "dataset_metadata.json")


def test_legacy_metadata_token_count_contradicts(packed_ds):
    _edit_metadata(packed_ds, num_train_tokens=3)
    _expect(packed_ds, "contradicting fields|metadata says 3 tokens", "dataset_metadata.json")


def test_packed_without_segment_ids(packed_ds):
    (packed_ds / "train" / "segment_ids.bin").unlink()
    _expect(packed_ds, "says the dataset is packed", "segment_ids.bin")


def test_segment_ids_in_unpacked_dataset(packed_ds):
    _edit_metadata(packed_ds, packed=False)
    _expect(packed_ds, "says the dataset is not packed", "segment_ids.bin")


def test_weighted_without_mask_weighted(packed_ds):
    (packed_ds / "train" / "mask_weighted.bin").unlink()
    _expect(packed_ds, "says the dataset is weighted", "mask_weighted.bin")


def test_block_size_contradicts_packed_lengths(packed_ds):
    _edit_metadata(packed_ds, block_size=12)
    _expect(packed_ds, "packed sample #0 has 10 tokens, but block_size", "episodes.idx")


def test_contradicting_spellings(packed_ds):
    _edit_metadata(packed_ds, packing_enabled=False)
    _expect(packed_ds, "contradicting fields: packed=True, packing_enabled=False", "dataset_metadata.json")


def test_newer_format_version(packed_ds):
    _edit_metadata(packed_ds, format_version=99)
    _expect(packed_ds, "newer than this reader", "dataset_metadata.json")


def test_missing_split(packed_ds):
    err = _expect(packed_ds, r"split 'val' is missing \(splits with data: \['train'\]\)", split="val")
    assert err.path.name == "val"


def test_missing_shard_in_sequence(tmp_path):
    rng = np.random.default_rng(4)
    path = write_dataset(tmp_path / "ds", {"train": random_episodes(rng, 30)}, weighted=True, packed=False,
                         tokens_per_shard=30)
    import shutil

    shutil.rmtree(path / "train" / "shard_00001")
    _expect(path, r"not contiguous: missing \['shard_00001'\]")


def test_ambiguous_top_level_and_shard_zero(tmp_path):
    rng = np.random.default_rng(6)
    path = write_dataset(tmp_path / "ds", {"train": random_episodes(rng, 30)}, weighted=True, packed=False,
                         tokens_per_shard=30)
    for name in ("tokens.bin", "mask.bin", "mask_weighted.bin", "episodes.idx"):
        (path / "train" / name).write_bytes((path / "train" / "shard_00000" / name).read_bytes())
    _expect(path, "ambiguous layout")


def test_dataset_pickles_without_its_data(packed_ds):
    import pickle

    ds = EpisodeDataset(packed_ds)
    first = ds[0]
    payload = pickle.dumps(ds)
    assert len(payload) < 4096, "memory maps must not be pickled"
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone[0]["tokens"], first["tokens"])


def test_writer_needs_context_manager(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", weighted=False, packed=False)
    with pytest.raises(RuntimeError, match="context manager"):
        writer.split("train")
    with pytest.raises(ValueError, match="invalid split name"):
        with DatasetWriter(tmp_path / "ds", weighted=False, packed=False) as w:
            w.split("shard_00001")
    assert not (tmp_path / "ds").exists()
