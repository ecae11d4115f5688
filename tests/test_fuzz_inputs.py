"""Property/fuzz tests (hypothesis) of the data tools on hostile input (issue 10).

JSONL -> prepare_sft: valid episode records (system, user + context, assistant + think +
cite, toolcall/toolresult, assistant_context, multi-turn, replay) mutated at random:
truncated, bytes flipped or inserted, a key deleted, a value's type changed, nested
deeply, huge integers, NaN, duplicate keys, lone surrogates, tag strings in content, blank
lines, CRLF, a BOM. prepare_sft either writes a dataset holding exactly the good records
(token for token) that the reader opens and validate passes, or stops with a UserError
naming the file and line and leaves nothing behind (an earlier output stays byte for
byte). With ``skip`` the skip count equals the number of bad lines, counted line by line.

Binary dataset -> validate / inspect / the reader: a valid dataset (DatasetWriter, with
tokenizer_state.json) with files truncated, extended, bytes flipped, files or splits
dropped, metadata and tokenizer state corrupted. Each tool succeeds or names a file inside
the dataset; never another exception. If validate passes, the DataModule reads every
sample (validate must not pass a dataset that breaks training).

The default profile is derandomized and small (the whole file well under 60 s on two
cores). The long profile (many more examples, random seeds) runs only when slow tests are
selected explicitly: ``pytest -m slow tests/test_fuzz_inputs.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import prepare_dataset, write_jsonl
from data_modules import DatasetFormatError, DatasetWriter, EpisodeDataset, build_packed_block, pack_best_fit_decreasing
from data_modules.collate import collate_samples
from mypt_lightning.data_prep import prepare as prepare_module
from mypt_lightning.data_prep.inspect import inspect_report
from mypt_lightning.data_prep.prepare import PrepareConfig, prepare_sft
from mypt_lightning.data_prep.validate import check_tokenizer_state, validate_dataset
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError, parse_episode_line, serialize_episode
from mypt_lightning.tokens.special_tokens import SPECIAL_TOKENS, TOKENIZER_VOCAB_SIZE
from mypt_lightning.tokens.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
BLOCK = 160  # packed block of the binary datasets (every base episode fits)
PACK_BLOCK = 2048  # prepare_sft's block when packing: longer than any mutated record

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
PROFILES = {
    "default": settings(max_examples=80, derandomize=True, **_COMMON),
    "long": settings(max_examples=1500, derandomize=False, **_COMMON),
}


def profile(request, name: str) -> settings:
    """The hypothesis settings of ``name``; the long one only when ``-m`` selects slow tests."""
    if name == "long":
        expr = request.config.getoption("markexpr") or ""
        if "slow" not in expr.replace("not slow", ""):
            pytest.skip("the long fuzz profile runs with -m slow")
    return PROFILES[name]


PROFILE_PARAMS = ["default", pytest.param("long", marks=pytest.mark.slow)]

BASE_RECORDS: list[dict] = [
    {"system": "You are MyPT.", "messages": [{"role": "user", "content": "Say hello."},
                                             {"role": "assistant", "content": "Hello there."}]},
    {"messages": [{"role": "user", "content": "What is in the notes?", "context": "Notes: ML is fun."},
                  {"role": "assistant", "content": "ML is fun.", "think": "Read the notes.", "cite": "notes"}]},
    {"language": "de", "_meta": {"operator": "search", "payload": "ML"},
     "messages": [{"role": "user", "content": "Find ML"},
                  {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "ML", "k": 3},
                   "think": "Search first."},
                  {"role": "toolresult", "name": "workspace.search", "content": {"documents": [], "total": 0}},
                  {"role": "assistant_context", "content": "Nothing was found."},
                  {"role": "assistant", "content": "Nothing about ML.", "cite": "none"},
                  {"role": "user", "content": "Ok?"}, {"role": "assistant", "content": "Yes."}]},
    {"messages": [{"role": "user", "content": "Run it"},
                  {"role": "assistant_toolcall", "name": "calc", "arguments": {"expr": "1+1"}},
                  {"role": "toolresult", "name": "calc", "content": "2"},
                  {"role": "assistant", "content": "It is 2. Ünïcödé ✓ 😀"}]},
    {"_replay": True, "text": "Some replayed pre-training text.\nWith two lines."},
]
TAG_STRINGS = sorted(SPECIAL_TOKENS) + ["<|endoftext|>", "</myPT_assistant><myPT_eot>"]
CONTENT_KEYS = ("content", "context", "think", "cite", "system", "text")


# ============================================================================ JSON text building
class Raw:
    """JSON text inserted as is (huge ints, NaN, escapes json.dumps would not write)."""

    def __init__(self, text: str):
        self.text = text


class Pairs:
    """An object written with the given (possibly repeated) keys."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        self.pairs = pairs


def emit(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, (dict, Pairs)):
        pairs = value.pairs if isinstance(value, Pairs) else list(value.items())
        return "{" + ", ".join(json.dumps(k, ensure_ascii=ascii_only) + ": " + emit(v, ascii_only)
                               for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(emit(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def nodes(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) of a JSON tree, the root included."""
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += nodes(v, path + (i,))
    return out


def replaced(tree: Any, path: tuple, new: Any) -> Any:
    """A copy of ``tree`` with the node at ``path`` replaced (``...`` deletes it from its parent)."""
    if not path:
        return new
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    head = path[0]
    if len(path) == 1 and new is ...:
        del copy[head]
        return copy
    copy[head] = replaced(tree[head], path[1:], new)
    return copy


OTHER_VALUES = [None, True, 0, -7, 2.5, "", "text", [], [1, "a"], {}, {"x": 1}]


def draw_line(data, record: dict) -> tuple[bytes, str]:
    """One JSONL line (no newline) and what it must be: good, bad, or unknown (decided line
    by line by the strict parser and the schema)."""
    ascii_only = data.draw(st.booleans(), label="ascii")
    kind = data.draw(st.sampled_from(
        ["keep"] * 6 + ["truncate", "flip", "insert", "delete_key", "retype", "nest", "huge_int", "nan",
         "duplicate_key", "surrogate", "tags", "tags", "not_object"]), label="mutation")
    text = emit(record, ascii_only)
    all_nodes = nodes(record)
    if kind == "keep":
        return text.encode(), "good"
    if kind == "truncate":  # a proper prefix of a JSON object is never valid JSON
        raw = text.encode()
        return raw[:data.draw(st.integers(1, len(raw) - 1), label="cut")], "bad"
    if kind in ("flip", "insert"):
        raw = bytearray(text.encode())
        for _ in range(data.draw(st.integers(1, 3), label="bytes")):
            at = data.draw(st.integers(0, len(raw) - (kind == "flip")), label="at")
            byte = data.draw(st.integers(0, 255), label="byte")
            if kind == "flip":
                raw[at] = byte
            else:
                raw.insert(at, byte)
        return bytes(raw), "unknown"
    if kind == "delete_key":
        keyed = [p for p, _ in all_nodes if p and isinstance(p[-1], str)]
        return emit(replaced(record, data.draw(st.sampled_from(keyed), label="key"), ...), ascii_only).encode(), "unknown"
    if kind == "retype":
        path, _ = data.draw(st.sampled_from(all_nodes[1:]), label="node")
        new = data.draw(st.sampled_from(OTHER_VALUES), label="value")
        return emit(replaced(record, path, new), ascii_only).encode(), "unknown"
    if kind == "nest":  # deeper than jsonio.MAX_DEPTH, whatever the depth of the node
        path, _ = data.draw(st.sampled_from(all_nodes[1:]), label="node")
        depth = data.draw(st.sampled_from([65, 100, 10_000]), label="depth")
        opener, closer = data.draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]), label="brackets")
        closed = data.draw(st.booleans(), label="closed")
        return emit(replaced(record, path, Raw(opener * depth + "1" + (closer * depth if closed else ""))),
                    ascii_only).encode(), "bad"
    if kind == "huge_int":
        path, _ = data.draw(st.sampled_from(all_nodes[1:]), label="node")
        digits = data.draw(st.sampled_from([101, 4301, 10_000]), label="digits")
        sign = data.draw(st.sampled_from(["", "-"]), label="sign")
        return emit(replaced(record, path, Raw(sign + "9" * digits)), ascii_only).encode(), "bad"
    if kind == "nan":
        path, _ = data.draw(st.sampled_from(all_nodes[1:]), label="node")
        value = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]), label="nan")
        return emit(replaced(record, path, Raw(value)), ascii_only).encode(), "bad"
    if kind == "duplicate_key":
        objects = [(p, v) for p, v in all_nodes if isinstance(v, dict) and v]
        path, obj = data.draw(st.sampled_from(objects), label="object")
        key = data.draw(st.sampled_from(sorted(obj)), label="key")
        again = data.draw(st.sampled_from([obj[key], "other"]), label="again")
        pairs = Pairs(list(obj.items()) + [(key, again)])
        return emit(replaced(record, path, pairs), ascii_only).encode(), "bad"
    if kind == "surrogate":
        strings = [p for p, v in all_nodes if isinstance(v, str)]
        path = data.draw(st.sampled_from(strings), label="string")
        half = data.draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "\\ude00x"]), label="half")
        line = emit(replaced(record, path, Raw(f'"a{half}b"')), ascii_only).encode()
        if data.draw(st.booleans(), label="raw_bytes"):  # CESU-style UTF-8 of a surrogate: invalid UTF-8
            line = line.replace(f"a{half}b".encode(), b"a\xed\xa0\x80b")
        return line, "bad"
    if kind == "tags":  # tag strings are text: they never become special ids (checked token for token)
        contents = [p for p, v in all_nodes if isinstance(v, str) and p and p[-1] in CONTENT_KEYS]
        path = data.draw(st.sampled_from(contents), label="content")
        tags = data.draw(st.lists(st.sampled_from(TAG_STRINGS), min_size=1, max_size=3), label="tags")
        return emit(replaced(record, path, "x" + " ".join(tags) + "y"), ascii_only).encode(), "good"
    assert kind == "not_object"
    value = data.draw(st.sampled_from(["[1, 2]", '"episode"', "3", "null", "true", "{}", "[]"]), label="value")
    return value.encode(), "bad"


def draw_jsonl(data, name: str) -> tuple[bytes, list[tuple[bytes, str]]]:
    """A whole file: ``(content, [(line, label), ...])`` with the lines exactly as a reader
    that splits on b"\\n" sees them (labels: good, bad, unknown, blank)."""
    lines: list[tuple[bytes, str]] = []
    for _ in range(data.draw(st.integers(1, 6), label=f"{name} records")):
        if data.draw(st.integers(0, 4), label="blank") == 0:
            lines.append((data.draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]), label="blank_line"), "blank"))
        record = data.draw(st.sampled_from(BASE_RECORDS), label="record")
        line, label = draw_line(data, record)
        parts = line.split(b"\n")  # an inserted newline byte makes two lines
        lines += [(p, label if len(parts) == 1 else "unknown") for p in parts]
    if data.draw(st.booleans(), label="crlf"):
        lines = [(line + b"\r", label) for line, label in lines]
    content = b"\n".join(line for line, _ in lines) + (b"\n" if data.draw(st.booleans(), label="final_newline") else b"")
    if data.draw(st.integers(0, 3), label="bom") == 0:  # encoding, not content: the lines stay as they are
        content = b"\xef\xbb\xbf" + content
    return content, lines


def judge(line: bytes, where: str) -> dict | None | EpisodeError:
    """What the strict parser and the schema make of one line on its own: the record, None
    for a blank line, or the EpisodeError. Any other exception is a bug and propagates."""
    if not line.removeprefix(b"\xef\xbb\xbf").strip():  # the documented rule: a BOM is no content
        return None
    try:
        return parse_episode_line(line, where=where)
    except EpisodeError as exc:
        return exc


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def episodes_in(dataset: Path) -> list[tuple[tuple, tuple]]:
    """(tokens, weights) of every episode of every split, in file order, read with every check on."""
    out = []
    for split in ("train", "val"):
        if not (dataset / split).exists():
            continue
        ds = EpisodeDataset(dataset, split, check_tokens=True, check_samples=True)
        for i in range(len(ds)):
            sample = ds[i]
            tokens, weights, segments = sample["tokens"], sample["weights"], sample["segment_ids"]
            if segments is None:
                out.append((tuple(tokens.tolist()), tuple(weights.tolist())))
                continue
            for seg in sorted(set(segments.tolist()) - {0}):
                keep = segments == seg
                out.append((tuple(tokens[keep].tolist()), tuple(weights[keep].tolist())))
    return out


@pytest.fixture(scope="module")
def previous_output(tmp_path_factory) -> Path:
    """A complete dataset to stand in for an earlier run's output (``overwrite``)."""
    root = tmp_path_factory.mktemp("previous")
    src = root / "in.jsonl"
    prepare_dataset([write_jsonl(src, BASE_RECORDS, ensure_ascii=True)], root / "ds")
    return root / "ds"


@contextlib.contextmanager
def _patched(owner, name: str, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def check_prepare_case(data, work: Path, previous_output: Path) -> None:
    files = data.draw(st.integers(1, 2), label="files")
    inputs, judged = [], []  # judged: (where, verdict) for every line of every input, in order
    (work / "in").mkdir()
    for f in range(files):
        path = work / "in" / f"part{f}.jsonl"
        content, lines = draw_jsonl(data, path.name)
        path.write_bytes(content)
        inputs.append(path)
        for number, (line, label) in enumerate(lines, start=1):
            where = f"{path}:{number}"
            verdict = judge(line, where)
            # the construction's label and the line-by-line verdict agree
            if label == "blank":
                assert verdict is None, (where, line)
            elif label == "good":
                assert isinstance(verdict, dict), (where, line, verdict)
            elif label == "bad":
                assert isinstance(verdict, EpisodeError), (where, line, verdict)
            judged.append((where, verdict))
    good = [v for _, v in judged if isinstance(v, dict)]
    bad = [(w, v) for w, v in judged if isinstance(v, EpisodeError)]

    policy = data.draw(st.sampled_from(["stop", "skip"]), label="on_error")
    packing = data.draw(st.booleans(), label="packing")
    weighted = data.draw(st.booleans(), label="weighted")
    val_split = data.draw(st.sampled_from([0.0, 0.0, 0.3]), label="val_split")
    out_parent = work / "out"
    out_parent.mkdir()
    out = out_parent / "ds"
    before = None
    if data.draw(st.booleans(), label="previous_output"):
        shutil.copytree(previous_output, out)
        before = tree_bytes(out)
    cfg = PrepareConfig(inputs=[str(p) for p in inputs], output_dir=str(out), val_split=val_split,
                        packing=packing, block_size=PACK_BLOCK, weighted=weighted, on_error=policy,
                        progress=False, num_workers=1, overwrite=before is not None)
    # small work units: lines cut across chunk boundaries keep their numbers
    chunk = data.draw(st.sampled_from([prepare_module.CHUNK_BYTES, 64, 7]), label="chunk_bytes")
    try:
        with contextlib.redirect_stderr(io.StringIO()), _patched(prepare_module, "CHUNK_BYTES", chunk):
            result = prepare_sft(cfg)
    except UserError as exc:  # EpisodeError is one too; anything else fails the test as it is
        event(f"prepare_sft {policy}: {type(exc).__name__}")
        message = str(exc)
        assert "\n" not in message, message
        if bad and policy == "stop":
            assert isinstance(exc, EpisodeError), message
            assert message.startswith(bad[0][0] + ": "), (message, bad[0][0])  # FILE:LINE of the first bad line
        else:
            assert not good, f"refused although {len(good)} records are good: {message}"
            assert all(str(p) in message for p in inputs), message  # names the inputs
            if bad:
                assert bad[0][0] in message, message  # and the first bad record by line
        # never partial output: nothing new beside the output, an earlier one unchanged
        assert sorted(os.listdir(out_parent)) == (["ds"] if before is not None else []), os.listdir(out_parent)
        if before is not None:
            assert tree_bytes(out) == before
        return

    event(f"prepare_sft {policy}: written" + (" (bad records skipped)" if bad else ""))
    assert good and (policy == "skip" or not bad)
    assert sorted(os.listdir(out_parent)) == ["ds"], os.listdir(out_parent)
    counts = result.metadata["counts"]
    assert counts["bad_records_skipped"] == len(bad), (counts, [w for w, _ in bad])
    assert counts["records"] == len(good) + len(bad)
    assert counts["episodes"] == len(good) and counts["too_long_rejected"] == 0
    assert result.metadata["errors"]["skipped"] == len(bad)
    tok = get_tokenizer()
    expected = []
    for record in good:
        tokens, weights = serialize_episode(record, weighted, tok)
        expected.append((tuple(tokens), tuple(np.float32(weights).tolist())))
    found = episodes_in(out)
    if packing or val_split:
        assert sorted(found) == sorted(expected)
    else:
        assert found == expected  # input order, token for token
    results = validate_dataset(out)
    assert all(r.passed for r in results), {r.name: r.examples for r in results if not r.passed}


@pytest.mark.parametrize("name", PROFILE_PARAMS)
def test_prepare_sft_on_mutated_jsonl(request, tmp_path, previous_output, name):
    @profile(request, name)
    @given(data=st.data())
    def case(data):
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        try:
            check_prepare_case(data, work, previous_output)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


# ---------------------------------------------------------------------------- the command line
def prepare_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / "prepare_sft.py"), "--no_progress", "--num_workers", "1",
                           *args], capture_output=True, text=True, timeout=300)


def test_prepare_sft_cli_on_mutated_jsonl(tmp_path, previous_output):
    good = [json.dumps(r) for r in BASE_RECORDS]
    lines = [good[0], good[2][:40], good[1] + "\r", "", '{"messages": ' + "[" * 5000, good[4],
             '{"a": 1, "a": 2}', good[3].replace("Run it", "<myPT_eot> Run it")]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    out = tmp_path / "out" / "ds"
    shutil.copytree(previous_output, out)
    before = tree_bytes(out)

    stop = prepare_cli("--input", str(src), "--output_dir", str(out), "--overwrite")
    assert stop.returncode == 2, stop.stderr
    assert stop.stderr.splitlines() == [stop.stderr.strip()] and "Traceback" not in stop.stderr
    assert stop.stderr.startswith(f"prepare_sft: error: {src}:2: invalid JSON"), stop.stderr
    assert tree_bytes(out) == before and os.listdir(out.parent) == ["ds"]

    # in process (a subprocess costs seconds of imports): the same main() as the command
    code, stdout, stderr = run_cli("prepare_sft.py", ["--input", str(src), "--output_dir", str(out), "--overwrite",
                                                      "--on-error", "skip", "--val_split", "0", "--no_progress"])
    assert code == 0, stderr
    assert "4 episodes" in stdout and "3 bad records skipped" in stdout, stdout
    assert os.listdir(out.parent) == ["ds"] and all(r.passed for r in validate_dataset(out))

    hopeless = tmp_path / "bad.jsonl"
    hopeless.write_bytes(b"\n".join(line.encode() for line in (good[0][:-1], "[]", "", "NaN")) + b"\n")
    none = prepare_cli("--input", str(hopeless), "--output_dir", str(tmp_path / "none"), "--on-error", "skip")
    assert none.returncode == 2, none.stderr
    assert none.stderr.splitlines() == [none.stderr.strip()] and "Traceback" not in none.stderr
    assert str(hopeless) in none.stderr and f"{hopeless}:1" in none.stderr, none.stderr
    assert not (tmp_path / "none").exists()


# ============================================================================ binary datasets
def _base_episodes(weighted: bool) -> list[tuple[list[int], list[float]]]:
    tok = get_tokenizer()
    episodes = []
    for n in range(3):  # three variants of each record: lengths differ
        for record in BASE_RECORDS:
            record = json.loads(json.dumps(record).replace("hello", "hello" + " again" * n))
            episodes.append(serialize_episode(record, weighted, tok))
    return episodes


def _write(path: Path, *, packed: bool, weighted: bool, tokens_per_shard: int | None = None) -> Path:
    episodes = _base_episodes(weighted)
    parts = {"train": episodes[:-3], "val": episodes[-3:]}
    with DatasetWriter(path, weighted=weighted, packed=packed, block_size=BLOCK if packed else None,
                       tokenizer_state=get_tokenizer().state_dict(), tokens_per_shard=tokens_per_shard) as writer:
        for split, eps in parts.items():
            out = writer.split(split)
            if not packed:
                for tokens, weights in eps:
                    out.add_episode(tokens, weights)
                continue
            for block in pack_best_fit_decreasing([len(t) for t, _ in eps], BLOCK):
                out.add_block(*build_packed_block([eps[i] for i in block], BLOCK))
    return path


@pytest.fixture(scope="module")
def valid_datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid")
    return {
        "packed_weighted": _write(root / "packed_weighted", packed=True, weighted=True),
        "flat_binary": _write(root / "flat_binary", packed=False, weighted=False),
        "flat_weighted_sharded": _write(root / "flat_weighted_sharded", packed=False, weighted=True,
                                        tokens_per_shard=400),
    }


def test_base_datasets_are_valid(valid_datasets):
    for path in valid_datasets.values():
        results = validate_dataset(path)
        assert all(r.passed for r in results), {r.name: r.examples for r in results if not r.passed}


INTERESTING_U32 = [0, 1, 255, 50256, TOKENIZER_VOCAB_SIZE - 1, TOKENIZER_VOCAB_SIZE, 50303, 50304, 2**31, 2**32 - 1]
INTERESTING_U64 = [0, 1, 2, 7, BLOCK - 1, BLOCK, BLOCK + 1, 10**6, 2**31, 2**32, 2**62 - 1, 2**62, 2**63, 2**64 - 1]
METADATA_KEYS = ["format_version", "packed", "weighted", "block_size", "has_loss_mask", "splits", "splits.train",
                 "splits.train.samples", "splits.train.tokens", "splits.train.shards", "splits.val.samples",
                 "num_train_episodes", "num_train_tokens", "num_val_shards", "packing_enabled", "weighted_mask",
                 "pack_block_size", "length_limit", "length_limit.truncated", "sources", "command", "tokenizer"]
TOKENIZER_KEYS = ["token_kind", "special_tokens", "special_token_encoder", "base_vocab_size", "vocab_size",
                  "name", "encoding"]
JSON_VALUES = ['null', 'true', 'false', '0', '1', '-1', '3', '4096', '1.5', '"x"', '[]', '[1]', '{}', '{"a": 1}',
               '9' * 200, '9' * 5000, 'NaN', '1e999', '"\\ud800"']
WHOLE_JSON = [b"", b"{", b"[]", b'"x"', b"3", b"null", b"{}", b"\xff\xfe{}", b"\xef\xbb\xbf{}",
              b"[" * 10_000, b'{"a": ' * 5000 + b"1" + b"}" * 5000, b'{"a": 1, "a": 2}', b"{" + b"9" * 5000 + b"}"]


UNEDITABLE = (OSError, ValueError, AttributeError, TypeError, RecursionError)  # what _set_json_key may meet


def _set_json_key(text: str, dotted: str, value: str | None) -> str:
    """``text`` with the JSON value at ``dotted`` set to the raw JSON ``value`` (None deletes)."""
    obj = json.loads(text)
    marker = "\u0000MARK\u0000"
    parts = dotted.split(".")
    target = obj
    for part in parts[:-1]:
        nxt = target.get(part) if isinstance(target, dict) else None
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    if value is None:
        target.pop(parts[-1], None)
        return json.dumps(obj)
    target[parts[-1]] = marker
    return json.dumps(obj).replace(json.dumps(marker), value)


def mutate_dataset(data, root: Path) -> list[str]:
    """Apply 1..3 random damages to the dataset at ``root``; returns their descriptions."""
    done = []
    for _ in range(data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="damages")):
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        kind = data.draw(st.sampled_from(["truncate", "extend", "flip", "set_value", "set_value", "drop_file",
                                          "drop_split", "empty_split", "metadata_key", "metadata_key",
                                          "tokenizer_key", "whole_json", "stray_shard", "text_id", "text_id",
                                          "file_to_dir"]),
                         label="damage")
        if kind in ("truncate", "extend", "flip", "set_value", "drop_file", "text_id", "file_to_dir") and not files:
            continue
        if kind == "file_to_dir":  # a directory where a file belongs
            name = data.draw(st.sampled_from(files), label="file")
            (root / name).unlink()
            (root / name).mkdir()
            done.append(f"directory {name}")
            continue
        if kind == "text_id":  # another ordinary text id: often still a valid dataset (validate may pass)
            tokens = [f for f in files if f.endswith("tokens.bin") and (root / f).stat().st_size >= 4]
            if not tokens:
                continue
            name = data.draw(st.sampled_from(tokens), label="tokens_file")
            array = np.fromfile(root / name, np.uint32)
            at = data.draw(st.integers(0, array.size - 1), label="token")
            array[at] = data.draw(st.integers(0, 50255), label="text_id")
            array.tofile(root / name)
            done.append(f"text id in {name}")
            continue
        if kind in ("truncate", "extend", "flip", "set_value", "drop_file"):
            name = data.draw(st.sampled_from(files), label="file")
            path = root / name
            raw = bytearray(path.read_bytes())
            if kind == "truncate":
                raw = raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)), label="size")]
            elif kind == "extend":
                raw += data.draw(st.binary(min_size=1, max_size=32), label="extra")
            elif kind == "flip":
                for _ in range(data.draw(st.integers(1, 4), label="bytes")):
                    if raw:
                        raw[data.draw(st.integers(0, len(raw) - 1), label="at")] = data.draw(st.integers(0, 255))
            elif kind == "set_value":  # an aligned element set to an interesting value
                wide = name.endswith(".idx")
                size = 8 if wide else (4 if name.endswith(("tokens.bin", "mask_weighted.bin")) else 1)
                if len(raw) >= size:
                    at = data.draw(st.integers(0, len(raw) // size - 1), label="element") * size
                    if size == 8:
                        value = data.draw(st.sampled_from(INTERESTING_U64), label="u64")
                    elif name.endswith("mask_weighted.bin"):
                        value = int(np.array(data.draw(st.sampled_from(
                            [0.0, 0.5, 1.0, 1.5, 2.0, -1.0, 1e30, float("nan"), float("inf")]), label="weight"),
                            np.float32).view(np.uint32))
                    elif size == 4:
                        value = data.draw(st.sampled_from(INTERESTING_U32), label="u32")
                    else:
                        value = data.draw(st.sampled_from([0, 1, 2, 3, 7, 255]), label="u8")
                    raw[at:at + size] = int(value).to_bytes(size, "little")
            else:
                path.unlink()
                done.append(f"drop {name}")
                continue
            path.write_bytes(bytes(raw))
            done.append(f"{kind} {name}")
        elif kind in ("drop_split", "empty_split"):
            split = data.draw(st.sampled_from(["train", "val"]), label="split")
            if (root / split).is_dir():
                if kind == "drop_split":
                    shutil.rmtree(root / split)
                else:
                    for f in (root / split).rglob("*.*"):
                        if f.is_file():
                            f.write_bytes(b"")
                    if data.draw(st.booleans(), label="and_counts"):  # consistent: a well-formed empty split
                        meta = root / "dataset_metadata.json"
                        with contextlib.suppress(*UNEDITABLE):
                            meta.write_text(_set_json_key(meta.read_text(encoding="utf-8"), f"splits.{split}", None))
            done.append(f"{kind} {split}")
        elif kind in ("metadata_key", "tokenizer_key"):
            path = root / ("dataset_metadata.json" if kind == "metadata_key" else "tokenizer_state.json")
            keys = METADATA_KEYS if kind == "metadata_key" else TOKENIZER_KEYS
            key = data.draw(st.sampled_from(keys), label="key")
            value = data.draw(st.sampled_from([None] + JSON_VALUES), label="json")
            try:
                path.write_text(_set_json_key(path.read_text(encoding="utf-8"), key, value), encoding="utf-8")
            except UNEDITABLE:
                continue  # the file is gone, no object or too deep for json: another damage did more
            done.append(f"{path.name}: {key} = {value}")
        elif kind == "whole_json":
            name = data.draw(st.sampled_from(["dataset_metadata.json", "tokenizer_state.json"]), label="json_file")
            if (root / name).is_dir():  # an earlier damage made it a directory
                continue
            (root / name).write_bytes(data.draw(st.sampled_from(WHOLE_JSON), label="content"))
            done.append(f"replace {name}")
        else:  # a shard directory where none belongs, or a gap in the numbering
            split = data.draw(st.sampled_from(["train", "val"]), label="split")
            number = data.draw(st.sampled_from([0, 1, 7]), label="shard")
            if (root / split).is_dir():
                (root / split / f"shard_{number:05d}").mkdir(exist_ok=True)
                done.append(f"stray shard {split}/{number}")
    return done


def names_a_file_inside(exc: BaseException, root: Path) -> bool:
    if isinstance(exc, DatasetFormatError):
        path = exc.path.absolute()
        return path == root or path.is_relative_to(root)
    return str(root) in str(exc)


def read_all(ds) -> int:
    for i in range(len(ds)):
        ds[i]
    return len(ds)


def run_cli(tool: str, args: list[str]) -> tuple[int, str, str]:
    main = runpy.run_path(str(TOOLS / tool))["main"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def train_reader_reads_everything(root: Path) -> None:
    """What training does: tokenizer state, the DataModule's datasets, every sample collated."""
    import warnings

    from data_modules import SFTDataModule

    check_tokenizer_state(root)
    dm = SFTDataModule(str(root), batch_size=2, block_size=BLOCK, epoch_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    sets = [dm.train_set] + [ds for _, ds in dm._val_sets]
    for ds in sets:
        samples = [ds[i] for i in range(len(ds))]
        for a in range(0, len(samples), 2):
            collate_samples(samples[a:a + 2])


def check_dataset_case(data, work: Path, valid_datasets: dict[str, Path]) -> None:
    name = data.draw(st.sampled_from(sorted(valid_datasets)), label="dataset")
    root = (work / name).absolute()
    shutil.copytree(valid_datasets[name], root)
    damage = mutate_dataset(data, root)

    # validate: never raises; a failed integrity/tokenizer/mask_files check names a file inside
    results = validate_dataset(root)
    for r in results:
        for example in r.examples:
            if r.name in ("integrity", "tokenizer", "mask_files"):
                assert str(root) in example, (r.name, example, damage)
            else:
                assert example.startswith(("train ", "val ")), (r.name, example, damage)
    passed = all(r.passed for r in results)
    event("validate: " + ("passed" if passed else "failed " + ", ".join(r.name for r in results if not r.passed)))
    code, out, err = run_cli("validate_sft_dataset.py", ["--dataset", str(root)])
    assert code == (0 if passed else 1), (code, out, err, damage)

    # the important cross-check: what validate passes, training reads to the end
    if passed:
        train_reader_reads_everything(root)

    # the reader as training opens it, as inspect opens it, and with the full scan
    for split in ("train", "val"):
        for check_tokens, check_samples in ((True, False), (False, True), (False, False)):
            try:
                read_all(EpisodeDataset(root, split, check_tokens=check_tokens, check_samples=check_samples,
                                        max_length=BLOCK + 1))
            except DatasetFormatError as exc:
                assert names_a_file_inside(exc, root), (str(exc), damage)
    try:
        train_reader_reads_everything(root)
    except DatasetFormatError as exc:
        assert names_a_file_inside(exc, root), (str(exc), damage)

    # inspect: a report (problems -> exit 1) or one line naming a file inside the dataset (exit 2)
    try:
        report = inspect_report(root, show_samples=2)
        expected_code = 1 if report.problems else 0
    except (DatasetFormatError, UserError) as exc:
        assert names_a_file_inside(exc, root), (str(exc), damage)
        expected_code = 2
    code, out, err = run_cli("inspect_sft_dataset.py", ["--dataset_dir", str(root), "--show_samples", "2"])
    assert code == expected_code, (code, err, damage)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and str(root) in err, (err, damage)


@pytest.mark.parametrize("name", PROFILE_PARAMS)
def test_tools_on_damaged_binary_datasets(request, tmp_path, valid_datasets, name):
    @profile(request, name)
    @given(data=st.data())
    def case(data):
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        try:
            check_dataset_case(data, work, valid_datasets)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    case()


def test_validate_and_inspect_cli_on_damaged_datasets(tmp_path, valid_datasets):
    """Damages through the real command lines: a failed check exits 1, an unreadable dataset 2 (one line)."""
    def cli(tool, flag, path):
        return subprocess.run([sys.executable, str(TOOLS / tool), flag, str(path)], capture_output=True, text=True,
                              timeout=300)

    ok = valid_datasets["packed_weighted"]
    bad_ids = tmp_path / "bad_ids"
    shutil.copytree(valid_datasets["flat_binary"], bad_ids)
    tokens = np.fromfile(bad_ids / "train" / "tokens.bin", np.uint32)
    tokens[3] = TOKENIZER_VOCAB_SIZE
    tokens.tofile(bad_ids / "train" / "tokens.bin")
    validate = cli("validate_sft_dataset.py", "--dataset", bad_ids)
    assert validate.returncode == 1 and "FAIL  integrity" in validate.stdout and "Traceback" not in validate.stderr
    code, stdout, _ = run_cli("inspect_sft_dataset.py", ["--dataset_dir", str(bad_ids)])
    assert code == 1 and "PROBLEM: train: 1 token id(s)" in stdout
    deep = tmp_path / "deep"
    shutil.copytree(ok, deep)
    (deep / "dataset_metadata.json").write_bytes(b"[" * 10_000)
    inspect = cli("inspect_sft_dataset.py", "--dataset_dir", deep)
    assert inspect.returncode == 2 and "Traceback" not in inspect.stderr
    assert inspect.stderr.strip().splitlines() == [inspect.stderr.strip()]
    assert str(deep / "dataset_metadata.json") in inspect.stderr
    code, stdout, _ = run_cli("validate_sft_dataset.py", ["--dataset", str(deep)])
    assert code == 1 and str(deep / "dataset_metadata.json") in stdout
