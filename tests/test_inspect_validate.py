"""validate_sft_dataset's named checks (each one made to fail by a targeted corruption) and
inspect_sft_dataset's report."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import prepare_dataset, write_jsonl
from mypt_lightning.data_prep.inspect import inspect_dataset
from mypt_lightning.data_prep.validate import CHECKS, validate_dataset, walk_episode
from mypt_lightning.tokens.special_tokens import ASSISTANT_OPEN, EOT, USER_OPEN

TOOLS = Path(__file__).resolve().parents[1] / "tools"

RECORDS = [
    {"system": "You are MyPT.", "messages": [{"role": "user", "content": "Say hello."},
                                             {"role": "assistant", "content": "Hello there."}]},
    {"messages": [{"role": "user", "content": "Find ML", "context": "Some context."},
                  {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "ML"}, "think": "Go."},
                  {"role": "toolresult", "name": "workspace.search", "content": {"documents": []}},
                  {"role": "assistant_context", "content": "Nothing found before."},
                  {"role": "assistant", "content": "Nothing.", "cite": "none"},
                  {"role": "user", "content": "Ok?"}, {"role": "assistant", "content": "Yes."}]},
    {"_replay": True, "text": "Some replayed pre-training text."},
] * 4


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    src = root / "in.jsonl"
    write_jsonl(src, RECORDS)  # ASCII records: the same bytes with or without ensure_ascii
    for name, kw in {"packed": dict(packing=True, block_size=128, weighted=True),
                     "flat": dict(weighted=False)}.items():
        prepare_dataset([src], root / name, **kw)
    return root


@pytest.fixture
def copy_of(datasets_dir, tmp_path):
    def make(name):
        shutil.copytree(datasets_dir / name, tmp_path / name)
        return tmp_path / name
    return make


def verdicts(path):
    return {r.name: r for r in validate_dataset(path)}


def failed(path):
    return sorted(name for name, r in verdicts(path).items() if not r.passed)


@pytest.mark.parametrize("name", ["packed", "flat"])
def test_prepared_datasets_pass_every_check(datasets_dir, name):
    results = verdicts(datasets_dir / name)
    assert list(results) == list(CHECKS)
    assert all(r.passed for r in results.values()), {n: r.examples for n, r in results.items()}
    assert results["structure"].checked == len(RECORDS)
    blocks = json.loads((datasets_dir / name / "dataset_metadata.json").read_text())["splits"]["train"]["samples"]
    assert results["segment_ids"].checked == (blocks if name == "packed" else 0)


def _arrays(path):
    tokens = np.fromfile(path / "train/tokens.bin", np.uint32)
    weights = np.fromfile(path / "train/mask_weighted.bin", np.float32) if (path / "train/mask_weighted.bin").exists() else None
    mask = np.fromfile(path / "train/mask.bin", np.uint8)
    return tokens, weights, mask


def test_trained_user_token_fails_mask_direction(copy_of):
    path = copy_of("flat")
    tokens, _, mask = _arrays(path)
    user_text = int(np.flatnonzero(tokens == USER_OPEN)[0]) + 1
    mask[user_text] = 1
    mask.tofile(path / "train/mask.bin")
    assert failed(path) == ["mask_alignment", "mask_direction"]
    assert "position" in verdicts(path)["mask_direction"].examples[0]


def test_shifted_mask_fails_alignment(copy_of):
    path = copy_of("packed")
    _, weights, mask = _arrays(path)
    np.roll(weights, 1).tofile(path / "train/mask_weighted.bin")
    np.roll(mask, 1).tofile(path / "train/mask.bin")
    results = verdicts(path)
    assert not results["mask_alignment"].passed and results["structure"].passed
    assert results["mask_alignment"].failures >= 8  # every conversation episode (replays may shift too)


def test_mask_files_disagree(copy_of):
    path = copy_of("packed")
    tokens, weights, mask = _arrays(path)
    a = int(np.flatnonzero(tokens == ASSISTANT_OPEN)[0]) + 1  # first answer token, trained
    mask[a] = 0
    mask.tofile(path / "train/mask.bin")
    assert failed(path) == ["mask_files"]


def test_special_id_inside_content_fails_structure(copy_of):
    path = copy_of("flat")
    tokens, _, _ = _arrays(path)
    answer = int(np.flatnonzero(tokens == ASSISTANT_OPEN)[0]) + 1
    tokens[answer] = EOT
    tokens.tofile(path / "train/tokens.bin")
    results = verdicts(path)
    assert not results["structure"].passed
    assert "<myPT_eot> out of place" in results["structure"].examples[0]


def test_broken_segment_ids(copy_of):
    path = copy_of("packed")
    segments = np.fromfile(path / "train/segment_ids.bin", np.uint8)
    segments[5] = 7
    segments.tofile(path / "train/segment_ids.bin")
    assert "segment_ids" in failed(path)


def test_untrained_eot(copy_of):
    path = copy_of("packed")
    tokens, weights, mask = _arrays(path)
    eot = int(np.flatnonzero(tokens == EOT)[0])
    weights[eot] = 0
    mask[eot] = 0
    weights.tofile(path / "train/mask_weighted.bin")
    mask.tofile(path / "train/mask.bin")
    assert failed(path) == ["eot_trained", "mask_alignment"]


def test_truncated_file_fails_integrity_and_skips_the_rest(copy_of):
    path = copy_of("flat")
    data = (path / "train/tokens.bin").read_bytes()
    (path / "train/tokens.bin").write_bytes(data[:-8])
    results = verdicts(path)
    assert not results["integrity"].passed and "tokens.bin" in results["integrity"].examples[0]
    assert results["structure"].not_run == "integrity failed"


def test_tokenizer_state_mismatch(copy_of):
    path = copy_of("flat")
    state = json.loads((path / "tokenizer_state.json").read_text())
    state["special_tokens"]["<myPT_eot>"] = 12
    (path / "tokenizer_state.json").write_text(json.dumps(state))
    assert failed(path) == ["tokenizer"]


def test_walk_episode_grammar():
    from mypt_lightning.tokens.protocol import serialize_episode

    tokens, weights = serialize_episode(RECORDS[1], weighted=True)
    walk = walk_episode(np.array(tokens))
    assert walk.errors == [] and walk.complete and walk.expected.tolist() == weights
    cut = walk_episode(np.array(tokens[:-3]))
    assert not cut.complete


def test_cli_exit_codes(datasets_dir, copy_of, capsys):
    main = runpy.run_path(str(TOOLS / "validate_sft_dataset.py"))["main"]
    assert main(["--dataset", str(datasets_dir / "packed")]) == 0
    assert "all checks passed" in capsys.readouterr().out
    path = copy_of("flat")
    (path / "train/tokens.bin").write_bytes(b"")
    assert main(["--dataset", str(path), "--json", str(path / "report.json")]) == 1
    assert "FAIL  integrity" in capsys.readouterr().out
    assert json.loads((path / "report.json").read_text())["integrity"]["passed"] is False
    assert main(["--dataset", str(path / "nope")]) == 2


def test_inspect_report(datasets_dir, capsys):
    report = inspect_dataset(datasets_dir / "packed", show_samples=12)
    assert "packed (block 128), weighted mask" in report
    assert "supervised fraction:" in report and "packing efficiency:" in report and "episodes per block" in report
    assert "[w=0]<myPT_system>You are MyPT.</myPT_system><myPT_user>Say hello.</myPT_user><myPT_assistant>" \
           "[w=1]Hello there.[w=2]</myPT_assistant><myPT_eot>" in report
    assert "[w=1.5]<myPT_think>" in report and "[w=2]<myPT_toolcall>" in report
    assert "#" in report  # the histogram
    colored = inspect_dataset(datasets_dir / "flat", show_samples=1, color=True)
    assert "\033[32m" in colored and "\033[2m" in colored
    main = runpy.run_path(str(TOOLS / "inspect_sft_dataset.py"))["main"]
    assert main(["--dataset_dir", str(datasets_dir / "flat"), "--show_samples", "2"]) == 0
    assert "== train: 12 samples, 12 episodes" in capsys.readouterr().out
    assert main(["--dataset_dir", str(datasets_dir / "missing")]) == 2


# --------------------------------------------------------------------------- broken datasets are not passed
def test_missing_train_split_fails_integrity(copy_of, capsys):
    path = copy_of("flat")
    (path / "train").rename(path / "val")  # a val split alone: nothing to train on
    results = verdicts(path)
    assert not results["integrity"].passed
    assert results["integrity"].examples[0].startswith(f"{path / 'train'}: split 'train' is missing")
    main = runpy.run_path(str(TOOLS / "validate_sft_dataset.py"))["main"]
    assert main(["--dataset", str(path)]) == 1
    assert "all checks passed" not in capsys.readouterr().out


def test_empty_train_split_fails_integrity(copy_of):
    """Found by tests/test_fuzz_inputs.py: a train split emptied (every file 0 bytes, no
    counts in the metadata) passed every check, then training failed with a ValueError."""
    path = copy_of("flat")
    for f in (path / "train").iterdir():
        f.write_bytes(b"")
    meta = json.loads((path / "dataset_metadata.json").read_text())
    del meta["splits"]
    (path / "dataset_metadata.json").write_text(json.dumps(meta))
    results = verdicts(path)
    assert not results["integrity"].passed
    assert results["integrity"].examples == [f"{path / 'train'}: split 'train' holds no samples: nothing to train on"]


@pytest.mark.parametrize("damage", ["zero_length", "overlap"])
def test_damaged_index_record_fails_integrity(copy_of, damage):
    path = copy_of("flat")
    index = np.fromfile(path / "train/episodes.idx", np.uint64).reshape(-1, 2)
    if damage == "zero_length":
        index[4, 1] = 0
    else:
        index[4, 0] -= 1
    index.tofile(path / "train/episodes.idx")
    results = verdicts(path)
    assert not results["integrity"].passed
    assert "episodes.idx: record #4" in results["integrity"].examples[0]
    assert ("is empty" if damage == "zero_length" else "overlaps record #3") in results["integrity"].examples[0]


@pytest.mark.parametrize("content", ["[]", '"x"', "3"])
def test_metadata_not_an_object_is_named_by_validate_and_inspect(copy_of, capsys, content):
    path = copy_of("flat")
    (path / "dataset_metadata.json").write_text(content)
    results = verdicts(path)
    assert not results["integrity"].passed
    assert "dataset_metadata.json: must hold a JSON object" in results["integrity"].examples[0]
    main = runpy.run_path(str(TOOLS / "inspect_sft_dataset.py"))["main"]
    assert main(["--dataset_dir", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset_metadata.json: must hold a JSON object" in err[0]


def test_inspect_invalid_metadata_json_is_one_line(copy_of, capsys):
    path = copy_of("packed")
    (path / "dataset_metadata.json").write_text("{not json")
    main = runpy.run_path(str(TOOLS / "inspect_sft_dataset.py"))["main"]
    assert main(["--dataset_dir", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"inspect_sft_dataset: error: {path / 'dataset_metadata.json'}: not valid JSON: "
                   "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"]


def test_inspect_flags_token_ids_beyond_the_vocabulary(copy_of, capsys):
    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE, VOCAB_SIZE

    path = copy_of("flat")
    tokens, _, _ = _arrays(path)
    answer = int(np.flatnonzero(tokens == ASSISTANT_OPEN)[0]) + 1
    tokens[answer] = VOCAB_SIZE + 7  # not even an embedding row
    tokens[answer + 1] = TOKENIZER_VOCAB_SIZE
    tokens.tofile(path / "train/tokens.bin")
    report = inspect_dataset(path, show_samples=1)
    assert f"PROBLEM: train: 2 token id(s) >= the vocabulary size {TOKENIZER_VOCAB_SIZE} " \
           f"(first: id {VOCAB_SIZE + 7} in sample 0 at position {answer})" in report
    assert f"<INVALID_ID_{VOCAB_SIZE + 7}>" in report
    main = runpy.run_path(str(TOOLS / "inspect_sft_dataset.py"))["main"]
    assert main(["--dataset_dir", str(path), "--show_samples", "1"]) == 1
    assert "PROBLEMS: 1" in capsys.readouterr().out


@pytest.mark.parametrize("content, reason", [
    (None, "missing"), ("3", "must hold a JSON object"), ("{bad", "not valid JSON"),
    ('{"token_kind": "gpt2", "special_token_encoder": 5}', "malformed field"),
])
def test_tokenizer_state_missing_or_malformed(copy_of, content, reason):
    path = copy_of("flat")
    if content is None:
        (path / "tokenizer_state.json").unlink()
    else:
        (path / "tokenizer_state.json").write_text(content)
    results = verdicts(path)
    assert failed(path) == ["tokenizer"]
    assert results["tokenizer"].examples[0].startswith(f"{path / 'tokenizer_state.json'}: {reason}")
