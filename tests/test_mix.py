"""mix_sft_jsonl: ratios, oversampling, provenance, determinism, bad input."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path

import pytest

from helpers import write_jsonl
from mypt_lightning.data_prep.mixing import MixInput, choose, mix_jsonl, parse_input_spec
from mypt_lightning.errors import UserError

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def episodes(prefix: str, n: int, **extra):
    out = []
    for i in range(n):
        r = {"messages": [{"role": "user", "content": f"{prefix} {i}"}, {"role": "assistant", "content": "ok"}]}
        r.update(extra)
        out.append(r)
    return out


def read(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def users(records):
    return [r["messages"][0]["content"] for r in records]


@pytest.fixture
def inputs(tmp_path):
    return write_jsonl(tmp_path / "a.jsonl", episodes("a", 10)), write_jsonl(tmp_path / "b.jsonl", episodes("b", 4))


def test_ratios_subsample_and_oversample(tmp_path, inputs):
    a, b = inputs
    report = mix_jsonl([MixInput(a, 0.5), MixInput(b, 2.5)], tmp_path / "m.jsonl", seed=1)
    out = read(tmp_path / "m.jsonl")
    assert report["total"] == len(out) == 5 + 10
    counts = Counter(users(out))
    assert sum(v for k, v in counts.items() if k.startswith("a")) == 5
    assert all(v == 1 for k, v in counts.items() if k.startswith("a"))
    b_counts = sorted(v for k, v in counts.items() if k.startswith("b"))
    assert b_counts == [2, 2, 3, 3]  # every record twice, plus a seeded half
    assert [r["share"] for r in report["inputs"]] == [5 / 15, 10 / 15]
    # without --shuffle: input order (a's picks in file order, then b's)
    assert users(out)[:5] == sorted(users(out)[:5], key=lambda s: int(s.split()[1]))


def test_provenance_in_meta_source_unless_already_set(tmp_path, inputs):
    a, _ = inputs
    c = write_jsonl(tmp_path / "c.jsonl", episodes("c", 2, _meta={"source": "generator-x", "operator": "COPY"}))
    d = write_jsonl(tmp_path / "d.jsonl", [{"_replay": True, "text": "replay text"}])
    mix_jsonl([MixInput(a, 0.2), MixInput(c, 1.0), MixInput(d, 1.0)], tmp_path / "m.jsonl")
    out = read(tmp_path / "m.jsonl")
    sources = [r["_meta"]["source"] for r in out]
    assert sources == ["a.jsonl", "a.jsonl", "generator-x", "generator-x", "d.jsonl"]
    assert out[2]["_meta"]["operator"] == "COPY"
    assert out[4]["_replay"] is True


def test_same_seed_same_bytes_other_seed_other_order(tmp_path, inputs):
    a, b = inputs
    spec = [MixInput(a, 0.7), MixInput(b, 1.5)]
    mix_jsonl(spec, tmp_path / "m1.jsonl", shuffle=True, seed=0)
    mix_jsonl(spec, tmp_path / "m2.jsonl", shuffle=True, seed=0)
    mix_jsonl(spec, tmp_path / "m3.jsonl", shuffle=True, seed=1)
    assert (tmp_path / "m1.jsonl").read_bytes() == (tmp_path / "m2.jsonl").read_bytes()
    assert (tmp_path / "m1.jsonl").read_bytes() != (tmp_path / "m3.jsonl").read_bytes()
    assert users(read(tmp_path / "m1.jsonl")) != sorted(users(read(tmp_path / "m1.jsonl")))


def test_choose_counts():
    import numpy as np

    rng = np.random.default_rng(0)
    assert choose(10, 1.0, rng).tolist() == list(range(10))
    assert len(choose(10, 0.35, rng)) == 4 and len(set(choose(10, 0.35, rng).tolist())) == 4
    assert Counter(choose(3, 3.0, rng).tolist()) == {0: 3, 1: 3, 2: 3}
    assert choose(0, 2.0, rng).size == 0


def test_spec_parsing():
    assert parse_input_spec("x/a.jsonl:0.7") == MixInput(Path("x/a.jsonl"), 0.7)
    assert parse_input_spec("a.jsonl") == MixInput(Path("a.jsonl"), 1.0)
    assert parse_input_spec("a.jsonl:19") == MixInput(Path("a.jsonl"), 19.0)
    with pytest.raises(UserError, match="positive"):
        parse_input_spec("a.jsonl:-1")


def test_bad_records_stop_or_skip_and_output_stays_atomic(tmp_path, inputs):
    a, _ = inputs
    bad = write_jsonl(tmp_path / "bad.jsonl", episodes("x", 2) + ['{"messages": "nope"}', "not json"])
    out = write_jsonl(tmp_path / "m.jsonl", ["previous content"])
    with pytest.raises(UserError, match=rf"{bad}:3: messages: must be a list"):
        mix_jsonl([MixInput(a, 1.0), MixInput(bad, 1.0)], out)
    assert out.read_text() == "previous content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "bad.jsonl", "m.jsonl"]
    report = mix_jsonl([MixInput(a, 1.0), MixInput(bad, 1.0)], out, on_error="skip")
    assert report["errors"].count == 2 and report["total"] == 12
    with pytest.raises(UserError, match="also an input"):
        mix_jsonl([MixInput(a, 1.0)], a)
    with pytest.raises(UserError, match="does not exist"):
        mix_jsonl([MixInput(tmp_path / "missing.jsonl", 1.0)], tmp_path / "x.jsonl")


def test_cli(tmp_path, inputs, capsys):
    a, b = inputs
    main = runpy.run_path(str(TOOLS / "mix_sft_jsonl.py"))["main"]
    assert main(["--inputs", f"{a}:0.7", f"{b}:0.3", "--output", str(tmp_path / "m.jsonl"), "--shuffle",
                 "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert "wrote 8 records" in text and "shuffled, seed 0" in text
    assert main(["--inputs", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "m2.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
