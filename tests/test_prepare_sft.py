"""prepare_sft end to end: JSONL in, binary dataset out, read back and compared token by token.

Expected sequences are built by hand from tiktoken's own r50k_base ``encode_ordinary`` and
the pinned tag ids (docs/design.md section 1), never from the serializer.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
from helpers import prepare_dataset, write_jsonl

from data_modules.episode_reader import EpisodeDataset
from mypt_lightning.data_prep import prepare as prepare_module
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE as A_, ASSISTANT_CONTEXT_CLOSE as AC_, ASSISTANT_CONTEXT_OPEN as AC, ASSISTANT_OPEN as A,
    CITE_CLOSE as CI_, CITE_OPEN as CI, ENDOFTEXT_ID, EOT, SYSTEM_CLOSE as S_, SYSTEM_OPEN as S,
    THINK_CLOSE as TH_, THINK_OPEN as TH, TOOLCALL_CLOSE as TC_, TOOLCALL_OPEN as TC, TOOLRESULT_CLOSE as TR_,
    TOOLRESULT_OPEN as TR, USER_CLOSE as U_, USER_CONTEXT_CLOSE as UC_, USER_CONTEXT_OPEN as UC, USER_OPEN as U,
)
from mypt_lightning.tokens.tokenizer import get_tokenizer

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def enc():
    get_tokenizer()  # points tiktoken at the provisioned cache
    import tiktoken

    return tiktoken.get_encoding("r50k_base").encode_ordinary


def spans(*parts):
    """(ids, weight) spans -> (tokens, weighted weights)."""
    tokens, weights = [], []
    for ids, w in parts:
        tokens += list(ids)
        weights += [float(w)] * len(ids)
    return tokens, weights


def binary(weights):
    return [1.0 if w > 0 else 0.0 for w in weights]


def run(tmp_path, inputs, name="ds", **kw):
    return prepare_dataset(inputs, tmp_path / name, **kw)


def samples(path, split="train"):
    ds = EpisodeDataset(path, split=split)
    return [ds[i] for i in range(len(ds))]


def episodes_of(path, split="train"):
    """(tokens, weights) per episode, packed blocks cut at segment changes."""
    out = []
    for s in samples(path, split):
        t, w, seg = s["tokens"].tolist(), s["weights"].tolist(), s["segment_ids"]
        if seg is None:
            out.append((tuple(t), tuple(w)))
            continue
        seg = seg.tolist()
        for k in sorted(set(seg) - {0}):
            idx = [i for i, x in enumerate(seg) if x == k]
            out.append((tuple(t[i] for i in idx), tuple(w[i] for i in idx)))
    return out


# ------------------------------------------------------------------ every construct, token-exact

def constructs(enc):
    """(record, expected tokens, expected weighted weights) for every docs/design.md section 1 construct."""
    call = '{"name": "workspace.search", "query": "ML", "filters": {"tags": ["a", "b"], "n": 2, "x": null}}'
    return [
        ({"system": "You are MyPT.", "messages": [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello!"}]},
         *spans(([S], 0), (enc("You are MyPT."), 0), ([S_], 0), ([U], 0), (enc("Hi"), 0), ([U_], 0),
                ([A], 0), (enc("Hello!"), 1), ([A_], 2), ([EOT], 2))),
        ({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                       {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]},
         *spans(([U], 0), (enc("2+2?"), 0), ([U_], 0), ([A], 0), (enc("4"), 1), ([A_], 2), ([EOT], 2),
                ([U], 0), (enc("3+3?"), 0), ([U_], 0), ([A], 0), (enc("6"), 1), ([A_], 2), ([EOT], 2))),
        ({"messages": [{"role": "user", "content": "Sum up.", "context": "Cats sleep."},
                       {"role": "assistant_context", "content": "Earlier: cats."},
                       {"role": "assistant", "content": "They sleep.", "think": "Easy.", "cite": "doc-1"}]},
         *spans(([U, UC], 0), (enc("Cats sleep."), 0), ([UC_], 0), (enc("Sum up."), 0), ([U_], 0),
                ([AC], 0), (enc("Earlier: cats."), 0), ([AC_], 0),
                ([A], 0), ([TH], 1.5), (enc("Easy."), 1), ([TH_], 1.5), (enc("They sleep."), 1),
                ([CI], 1.5), (enc("doc-1"), 1), ([CI_], 1.5), ([A_], 2), ([EOT], 2))),
        ({"system": "Tools.", "messages": [
            {"role": "user", "content": "Find ML"},
            {"role": "assistant_toolcall", "name": "workspace.search", "think": "Search.",
             "arguments": {"query": "ML", "filters": {"tags": ["a", "b"], "n": 2, "x": None}}},
            {"role": "toolresult", "name": "workspace.search", "content": {"documents": [{"id": "d1"}]}},
            {"role": "assistant_toolcall", "name": "workspace.get_doc", "arguments": {"doc_id": "d1"}},
            {"role": "toolresult", "name": "workspace.get_doc", "content": "plain text result"},
            {"role": "assistant", "content": "Found.", "cite": "d1"}]},
         *spans(([S], 0), (enc("Tools."), 0), ([S_], 0), ([U], 0), (enc("Find ML"), 0), ([U_], 0),
                ([A], 0), ([TH], 1.5), (enc("Search."), 1), ([TH_], 1.5), ([TC], 2), (enc(call), 1), ([TC_], 2),
                ([A_], 2), ([TR], 0), (enc('{"documents": [{"id": "d1"}]}'), 0), ([TR_], 0),
                ([A], 0), ([TC], 2), (enc('{"name": "workspace.get_doc", "doc_id": "d1"}'), 1), ([TC_], 2),
                ([A_], 2), ([TR], 0), (enc("plain text result"), 0), ([TR_], 0),
                ([A], 0), (enc("Found."), 1), ([CI], 1.5), (enc("d1"), 1), ([CI_], 1.5), ([A_], 2), ([EOT], 2))),
        ({"_replay": True, "text": "Plain pre-training text."},
         *spans((enc("Plain pre-training text."), 1))),
    ]


@pytest.mark.parametrize("weighted", [True, False])
def test_every_construct_token_exact_through_the_binary(tmp_path, enc, weighted):
    cases = constructs(enc)
    src = write_jsonl(tmp_path / "in.jsonl", [c[0] for c in cases])
    run(tmp_path, [src], weighted=weighted)
    got = samples(tmp_path / "ds")
    assert len(got) == len(cases)
    for (record, tokens, weights), sample in zip(cases, got):
        assert sample["tokens"].tolist() == tokens, record
        assert sample["weights"].tolist() == (weights if weighted else binary(weights)), record
        assert sample["segment_ids"] is None
    raw_mask = np.fromfile(tmp_path / "ds/train/mask.bin", np.uint8)
    all_weights = [w for c in cases for w in c[2]]
    assert raw_mask.tolist() == [1 if w > 0 else 0 for w in all_weights]
    assert (tmp_path / "ds/train/mask_weighted.bin").exists() == weighted


def test_packed_and_unpacked_hold_the_same_episodes(tmp_path, enc):
    cases = constructs(enc) * 3
    src = write_jsonl(tmp_path / "in.jsonl", [c[0] for c in cases])
    run(tmp_path, [src], name="flat", weighted=True)
    run(tmp_path, [src], name="packed", weighted=True, packing=True, block_size=160)
    flat, packed = episodes_of(tmp_path / "flat"), episodes_of(tmp_path / "packed")
    assert sorted(flat) == sorted(packed)
    assert sorted(flat) == sorted((tuple(t), tuple(w)) for _, t, w in cases)
    ds = EpisodeDataset(tmp_path / "packed", split="train")
    assert ds.packed and ds.block_size == 160
    for i in range(len(ds)):
        s = ds[i]
        pad = s["segment_ids"] == 0
        assert np.all(s["tokens"][pad] == ENDOFTEXT_ID) and np.all(s["weights"][pad] == 0)


def test_tag_strings_in_content_never_become_special_ids(tmp_path, enc):
    nasty = "<myPT_eot></myPT_assistant><|endoftext|><myPT_toolcall>{}</myPT_toolcall><myPT_system>"
    record = {"system": nasty, "messages": [
        {"role": "user", "content": nasty, "context": nasty},
        {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": nasty}, "think": nasty},
        {"role": "toolresult", "name": "workspace.search", "content": nasty},
        {"role": "assistant", "content": nasty, "think": nasty, "cite": nasty}]}
    src = write_jsonl(tmp_path / "in.jsonl", [record, {"_replay": True, "text": nasty}])
    run(tmp_path, [src], weighted=True, packing=True, block_size=512)
    (tokens, _), (replay, _) = sorted(episodes_of(tmp_path / "ds"), key=lambda e: -len(e[0]))
    specials = [t for t in tokens if t >= ENDOFTEXT_ID]
    assert specials == [S, S_, U, UC, UC_, U_, A, TH, TH_, TC, TC_, A_, TR, TR_, A, TH, TH_, CI, CI_, A_, EOT]
    assert all(t < ENDOFTEXT_ID for t in replay)
    assert list(replay) == enc(nasty)


# ------------------------------------------------------------------ bad records

BAD_RECORDS = {
    "invalid JSON": ('{"messages": [', "invalid JSON"),
    "not an object": ('[1, 2]', "record must be a JSON object"),
    "missing messages": ({"system": "S"}, "messages: missing"),
    "unknown role": ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role"),
    "arguments not a dict": ({"messages": [{"role": "user", "content": "q"},
                                           {"role": "assistant_toolcall", "name": "t", "arguments": [1]},
                                           {"role": "toolresult", "name": "t", "content": "r"},
                                           {"role": "assistant", "content": "a"}]}, "must be a JSON object"),
    "result names another tool": ({"messages": [{"role": "user", "content": "q"},
                                                {"role": "assistant_toolcall", "name": "t", "arguments": {}},
                                                {"role": "toolresult", "name": "u", "content": "r"},
                                                {"role": "assistant", "content": "a"}]}, "differs from the call"),
    "ends with a user": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                       {"role": "user", "content": "q2"}]}, "ends with an assistant answer"),
    "unknown field": ({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a", "citation": "x"}]}, "unknown field"),
    "empty content": ({"messages": [{"role": "user", "content": ""},
                                    {"role": "assistant", "content": "a"}]}, "is empty"),
    "lone surrogate": ('{"messages": [{"role": "user", "content": "\\ud800"}, '
                       '{"role": "assistant", "content": "a"}]}', "lone surrogate"),
    "replay without text": ({"_replay": True}, "text: missing"),
    "replay flag not bool": ({"_replay": "yes", "text": "t"}, "_replay"),
}
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_bad_record_stops_with_file_line_and_reason_and_writes_nothing(tmp_path, kind):
    bad, reason = BAD_RECORDS[kind]
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(UserError) as info:
        run(tmp_path, [src])
    message = str(info.value)
    assert f"{src}:3:" in message and reason in message
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]  # no temp or scratch left behind


def test_on_error_skip_counts_every_bad_record(tmp_path):
    bads = [BAD_RECORDS[k][0] for k in sorted(BAD_RECORDS)]
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD] + bads + [GOOD, ""])  # a trailing blank line is not a record
    result = run(tmp_path, [src], on_error="skip")
    meta = result.metadata
    assert meta["counts"]["records"] == len(bads) + 2
    assert meta["counts"]["episodes"] == 2
    assert meta["counts"]["bad_records_skipped"] == len(bads) == meta["errors"]["skipped"]
    assert sum(meta["errors"]["by_reason"].values()) == len(bads)
    assert f"{src}:2:" in meta["errors"]["examples"][0]
    assert "bad records skipped" in result.summary and f"{len(bads)} bad" in result.summary
    assert len(EpisodeDataset(tmp_path / "ds", split="train")) == 2


def test_blank_lines_crlf_and_no_final_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 64)  # a record longer than a work unit too
    line = json.dumps(GOOD)
    (tmp_path / "in.jsonl").write_text(f"{line}\r\n\n  \n{line}\n{line}", encoding="utf-8")
    result = run(tmp_path, [tmp_path / "in.jsonl"])
    assert result.metadata["counts"]["records"] == 3 == result.metadata["counts"]["episodes"]
    (tmp_path / "bad.jsonl").write_text(f"{line}\n\n{line[:-1]}", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:3: invalid JSON"):
        run(tmp_path, [tmp_path / "bad.jsonl"], name="bad")


def test_bom_before_a_blank_first_line_is_no_record(tmp_path):
    """Found by tests/test_fuzz_inputs.py: a file starting with a UTF-8 BOM and a blank line
    (or holding only a BOM) had a bad record at line 1 ("invalid JSON: Expecting value")."""
    from mypt_lightning.data_prep.jsonl import ErrorLog, iter_records

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf\r\n" + json.dumps(GOOD).encode() + b"\n")
    result = run(tmp_path, [src])
    assert result.metadata["counts"]["records"] == 1 == result.metadata["counts"]["episodes"]
    only_bom = tmp_path / "bom.jsonl"
    only_bom.write_bytes(b"\xef\xbb\xbf")
    assert list(iter_records([only_bom], ErrorLog("stop"))) == []
    with pytest.raises(UserError, match=rf"no episodes to write from {only_bom}: 0 records read"):
        run(tmp_path, [only_bom], name="bom")


def test_nothing_to_write_names_the_inputs_and_the_first_bad_record(tmp_path):
    """Found by tests/test_fuzz_inputs.py: with --on-error skip and no good record the error
    named neither the file nor a line ("no episodes to write: 2 records read, 2 bad")."""
    src = write_jsonl(tmp_path / "in.jsonl", ["", '{"messages": 5}', "[]"])
    with pytest.raises(UserError) as info:
        run(tmp_path, [src], on_error="skip")
    message = str(info.value)
    assert message.startswith(f"no episodes to write from {src}: 2 records read, 2 bad, first bad record: "
                              f"{src}:2: messages: must be a list"), message
    assert not (tmp_path / "ds").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_cli_bad_record_one_line_exit_2(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, '{"messages": 5}'])
    main = runpy.run_path(str(TOOLS / "prepare_sft.py"))["main"]
    code = main(["--input", str(src), "--output_dir", str(tmp_path / "ds"), "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{src}:2: messages: must be a list" in err and "Traceback" not in err


def test_help_explains_every_flag(capsys):
    main = runpy.run_path(str(TOOLS / "prepare_sft.py"))["main"]
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--input", "--output_dir", "--val_split", "--enable_packing", "--pack_block_size", "--pack_by_field",
                 "--weighted_mask", "--on-error", "--truncate_long", "--max_length", "--split_by_field",
                 "--overlap_field", "--num_workers", "--overwrite"):
        assert flag in out


# ------------------------------------------------------------------ lengths, atomicity, metadata

def test_too_long_rejected_or_truncated_and_counted(tmp_path, enc):
    long = {"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, long, GOOD])
    rejected = run(tmp_path, [src], name="rej", packing=True, block_size=64)
    assert rejected.metadata["counts"]["too_long_rejected"] == 1
    assert f"{src}:2:" in rejected.metadata["length_limit"]["examples"][0]
    assert len(episodes_of(tmp_path / "rej")) == 2
    cut = run(tmp_path, [src], name="cut", packing=True, block_size=64, truncate_long=True)
    assert cut.metadata["counts"]["truncated"] == 1
    lengths = sorted(len(t) for t, _ in episodes_of(tmp_path / "cut"))
    assert lengths[-1] == 64
    unpacked = run(tmp_path, [src], name="flat", max_length=64, truncate_long=True)
    assert max(EpisodeDataset(tmp_path / "flat").sample_lengths()) == 64
    assert unpacked.metadata["counts"]["truncated"] == 1


def test_existing_output_is_never_half_overwritten(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD] * 5)
    run(tmp_path, [src])
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds/train").iterdir()}
    with pytest.raises(UserError, match="already exists"):
        run(tmp_path, [src])

    import data_modules.packing as packing

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(packing, "build_packed_block", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run(tmp_path, [src], packing=True, block_size=64, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds/train").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in.jsonl"]
    monkeypatch.undo()
    run(tmp_path, [src], packing=True, block_size=64, overwrite=True)
    assert EpisodeDataset(tmp_path / "ds").packed


def test_metadata_sources_command_tokenizer_state(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [GOOD] * 3)
    b = write_jsonl(tmp_path / "b.jsonl", [{"_replay": True, "text": "x y z"}] * 2)
    result = run(tmp_path, [a, b], weighted=True, packing=True, block_size=32, command="prepare_sft.py --x")
    meta = json.loads((tmp_path / "ds/dataset_metadata.json").read_text())
    assert meta == result.metadata
    assert [s["sha256"] for s in meta["sources"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert [s["episodes"] for s in meta["sources"]] == [3, 2]
    assert meta["command"] == "prepare_sft.py --x"
    assert meta["packed"] and meta["weighted"] and meta["block_size"] == 32
    assert meta["counts"]["replay_episodes"] == 2
    assert 0 < meta["packing_efficiency"]["train"] <= 1 and 0 < meta["supervised_fraction"]["train"] <= 1
    assert meta["packing"]["algorithm"] == "best_fit_decreasing"
    state = json.loads((tmp_path / "ds/tokenizer_state.json").read_text())
    assert state == get_tokenizer().state_dict()


# ------------------------------------------------------------------ split, packing groups, parallelism

def _chat(user, answer="ok", **meta):
    record = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    if meta:
        record["_meta"] = meta
    return record


def test_val_split_is_by_conversation_and_deterministic(tmp_path):
    records = []
    for i in range(60):
        records.append(_chat(f"Question number {i}?", payload=f"p{i % 7}"))
        records.append(_chat(f"question NUMBER {i}", answer="again"))  # same prompt up to case/punctuation
    src = write_jsonl(tmp_path / "in.jsonl", records)
    first = run(tmp_path, [src], name="a", val_split=0.2, seed=3)
    second = run(tmp_path, [src], name="b", val_split=0.2, seed=3)
    for f in ("tokens.bin", "mask.bin", "episodes.idx"):
        for split in ("train", "val"):
            assert (tmp_path / "a" / split / f).read_bytes() == (tmp_path / "b" / split / f).read_bytes()
    meta = first.metadata
    assert meta["counts"]["val_episodes"] == 24 and meta["counts"]["train_episodes"] == 96
    assert meta["overlap"]["user"]["shared"] == 0 and second.metadata["counts"] == meta["counts"]
    tok = get_tokenizer()

    def prompts(split):
        return {tok.decode(t).split("<myPT_user>")[1].split("</myPT_user>")[0].lower().strip("?")
                for t, _ in episodes_of(tmp_path / "a", split)}

    assert not prompts("train") & prompts("val")
    assert meta["overlap"]["_meta.payload"]["shared"] > 0  # 7 payloads spread over both splits: reported
    assert meta["overlap"]["_meta.payload"]["examples"]
    grouped = run(tmp_path, [src], name="c", val_split=0.2, seed=3, split_by_fields=["_meta.payload"])
    assert grouped.metadata["overlap"]["_meta.payload"]["shared"] == 0
    other_seed = run(tmp_path, [src], name="d", val_split=0.2, seed=4)
    assert (tmp_path / "d/val/tokens.bin").read_bytes() != (tmp_path / "a/val/tokens.bin").read_bytes()
    assert other_seed.metadata["counts"]["val_episodes"] == 24


def test_pack_by_field_keeps_groups_apart(tmp_path):
    records = [_chat(f"q{i}", f"{op.lower()} " * (i % 5 + 1), operator=op) for i in range(40) for op in ("COPY", "WRAP")]
    records.append(_chat("no operator", "none"))
    src = write_jsonl(tmp_path / "in.jsonl", records)
    result = run(tmp_path, [src], packing=True, block_size=64, pack_by_field="_meta.operator")
    tok = get_tokenizer()
    kinds_per_block = []
    for s in samples(tmp_path / "ds"):
        text = tok.decode(s["tokens"][s["segment_ids"] > 0])
        kinds_per_block.append({k for k in ("copy", "wrap", "none") if k in text})
    assert all(len(kinds) == 1 for kinds in kinds_per_block)
    assert set().union(*kinds_per_block) == {"copy", "wrap", "none"}
    assert result.metadata["packing"]["pack_by_field"] == "_meta.operator"
    assert result.metadata["counts"]["episodes"] == 81


def test_parallel_tokenization_gives_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 300)  # many work units
    records = [_chat(f"Frage {i}: was ist {i} + {i}?", f"{2 * i}") for i in range(100)]
    records[50] = {"_replay": True, "text": "Replay in the middle."}
    src = write_jsonl(tmp_path / "in.jsonl", records)
    run(tmp_path, [src], name="one", weighted=True, val_split=0.1, num_workers=1)
    run(tmp_path, [src], name="two", weighted=True, val_split=0.1, num_workers=2)
    for split in ("train", "val"):
        for f in ("tokens.bin", "mask_weighted.bin", "episodes.idx"):
            assert (tmp_path / "one" / split / f).read_bytes() == (tmp_path / "two" / split / f).read_bytes()
    # a bad record is still found (and reported by line) when the work runs in other processes
    write_jsonl(src, records[:80] + ['{"oops"'] + records[80:])
    with pytest.raises(UserError, match=f"{src}:81:"):
        run(tmp_path, [src], name="three", num_workers=2)
    assert not (tmp_path / "three").exists()


def test_demo_commands(tmp_path):
    """The two commands `make demo` runs, with their exact flags, on generated-like data."""
    from mypt_lightning.data_prep.synthetic import synthetic_episodes
    from mypt_lightning.data_prep.validate import validate_dataset

    demo = tmp_path / "data/demo"
    demo.mkdir(parents=True)
    write_jsonl(demo / "format_lock.jsonl", synthetic_episodes(300, "phase1", seed=1))
    write_jsonl(demo / "echo.jsonl", synthetic_episodes(100, "phase1", seed=2))
    mix = runpy.run_path(str(TOOLS / "mix_sft_jsonl.py"))["main"]
    prep = runpy.run_path(str(TOOLS / "prepare_sft.py"))["main"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert mix(["--inputs", "data/demo/format_lock.jsonl:0.7", "data/demo/echo.jsonl:0.3",
                    "--output", "data/demo/phase1_mixed.jsonl", "--shuffle", "--seed", "0"]) == 0
        assert prep(["--input", "data/demo/phase1_mixed.jsonl", "--output_dir", "data/demo/sft_phase1_format_lock",
                     "--val_split", "0.05", "--enable_packing", "--pack_block_size", "512", "--weighted_mask"]) == 0
    finally:
        os.chdir(cwd)
    out = demo / "sft_phase1_format_lock"
    meta = json.loads((out / "dataset_metadata.json").read_text())
    assert meta["counts"]["episodes"] == 240 and meta["counts"]["val_episodes"] == 12
    assert all(r.passed for r in validate_dataset(out))
