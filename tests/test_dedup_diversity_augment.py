"""Deduplication, diversity analysis, rule-based paraphrase augmentation and diversification."""

from __future__ import annotations

import json
import random
import runpy
from collections import Counter
from pathlib import Path

import pytest

from helpers import write_jsonl
from mypt_lightning.data_prep.augment import augment_to_target, diversify, family_id, paraphrase, paraphrase_record
from mypt_lightning.data_prep.dedup import deduplicate
from mypt_lightning.data_prep.diversity import analyze, signature
from mypt_lightning.data_prep.textnorm import guess_language, normalize_loose
from mypt_lightning.tokens.protocol import validate_episode

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def chat(user, answer="ok", language=None, **meta):
    r = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    if language:
        r["language"] = language
    if meta:
        r["_meta"] = meta
    return r


def pairs(records):
    return [(f"x:{i}", r) for i, r in enumerate(records)]


def read(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ dedup

def test_dedup_exact_ignores_metadata_only():
    records = [chat("Hi", source="a"), chat("Hi", source="b"), chat("Hi", "other"), chat("hi")]
    stats = Counter()
    kept = list(deduplicate(pairs(records), "exact", stats=stats))
    assert kept == [records[0], records[2], records[3]]
    assert stats["dropped_exact_duplicate"] == 1 and stats["kept"] == 3


def test_dedup_by_normalized_user_message_with_limit():
    records = [chat("What is Python?"), chat("what is python", "b"), chat("WHAT IS PYTHON!!", "c"),
               chat("What is R?"), {"_replay": True, "text": "Same text."}, {"_replay": True, "text": "same  text"}]
    assert list(deduplicate(pairs(records), "user_message")) == [records[0], records[3], records[4]]
    assert list(deduplicate(pairs(records), "user_message", max_per_key=2)) == [records[0], records[1], records[3],
                                                                                  records[4], records[5]]
    with pytest.raises(ValueError):
        list(deduplicate(pairs(records), "fuzzy"))


def test_dedup_cli(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("A"), chat("A"), chat("a."), chat("B")])
    main = runpy.run_path(str(TOOLS / "deduplicate_episodes.py"))["main"]
    assert main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--mode", "both"]) == 0
    assert [r["messages"][0]["content"] for r in read(tmp_path / "o.jsonl")] == ["A", "B"]
    assert "kept 2" in capsys.readouterr().out


# ------------------------------------------------------------------ diversity

def test_distinct_n_signatures_languages():
    records = [chat("What is the capital of France?", "Paris is the capital.", "en"),
               chat("What is the capital of Spain?", "Madrid is the capital.", "en"),
               chat("Was ist die Hauptstadt von Italien?", "Rom.", "de"),
               {"_replay": True, "text": "plain"}]
    report = analyze(pairs(records))
    assert report["episodes"] == 4 and report["replay"] == 1
    assert report["languages"] == {"en": 2, "de": 1, "other": 1}
    # user words: 6 + 6 + 6 = 18 unigrams, distinct: what is the capital of france spain was ist die
    # hauptstadt von italien = 13
    assert report["distinct_n"]["user"]["distinct_1"] == round(13 / 18, 4)
    assert report["template_signatures"]["distinct"] == 2  # France/Spain share one signature
    assert report["template_signatures"]["top"][0] == {"signature": "what is the capital of <W>", "count": 2,
                                                       "share": round(2 / 3, 4)}
    assert report["structures"] == {"user>assistant": 3, "replay": 1}
    assert signature('Repeat "abc" 3 times') == "repeat <Q> <N> times"


def test_diversity_cli(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("Say hello.", "Hello.")] * 3)
    main = runpy.run_path(str(TOOLS / "analyze_episode_diversity.py"))["main"]
    assert main(["--input", str(src), "--json", str(tmp_path / "r.json")]) == 0
    assert "repeated share 66.7%" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["distinct_user_messages"] == 1


def test_textnorm():
    assert normalize_loose("  What's   UP?!") == "what s up"
    assert guess_language("Kannst du mir bitte sagen, wie das Wetter ist?") == "de"
    assert guess_language("Can you tell me what the weather is like?") == "en"
    assert guess_language("12345") == "other"


# ------------------------------------------------------------------ paraphrase

def test_paraphrase_changes_phrases_and_keeps_quotes():
    rng = random.Random(3)
    outs = {paraphrase("Can you explain what Python is?", "en", rng) for _ in range(20)}
    assert len(outs) > 3 and "Can you explain what Python is?" not in outs
    assert any(o.startswith("Could you") or o.startswith("Would you") for o in outs)
    for _ in range(20):
        out = paraphrase('Repeat exactly: "Can you explain this?"', "en", rng)
        assert out.endswith('"Can you explain this?"') or out.endswith('"Can you explain this?" Thanks!') \
            or out.endswith('"Can you explain this?" Thank you.')
    de = {paraphrase("Kannst du mir erklären, was Python ist?", "de", rng) for _ in range(20)}
    assert any("Könntest du" in o or "Würdest du" in o for o in de)
    assert paraphrase("x", "en", random.Random(0)) != "x"  # politeness at least


def test_paraphrase_record_keeps_answers_and_marks_family():
    record = chat("Can you list three colors?", "Red, green, blue.", "en", id=7)
    variant = paraphrase_record(record, random.Random(1))
    validate_episode(variant)
    assert variant["messages"][1] == record["messages"][1]
    assert variant["messages"][0]["content"] != record["messages"][0]["content"]
    assert variant["_meta"]["augmented"] == "paraphrase" and variant["_meta"]["paraphrase_of"] == family_id(record)
    assert record["messages"][0]["content"] == "Can you list three colors?"  # the original is untouched
    assert paraphrase_record({"_replay": True, "text": "t"}, random.Random(0)) is None


def test_augment_to_target_is_deterministic_and_distinct():
    records = [chat("Can you explain gravity?", "Mass attracts mass.", "en"),
               chat("Kannst du mir kurz erklären, was ein Atom ist?", "Ein Baustein.", "de")]
    out, stats = augment_to_target(records, 12, seed=5)
    again, _ = augment_to_target(records, 12, seed=5)
    assert out == again and len(out) == 12 and stats["added"] == 10 and stats["shortfall"] == 0
    users = [r["messages"][0]["content"] for r in out]
    assert len(set(users)) == 12
    assert {r["_meta"]["paraphrase_of"] for r in out} == {family_id(records[0]), family_id(records[1])}
    for r in out:
        validate_episode(r)


def test_augment_cli_and_shortfall(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("Hi", "Hello")])
    main = runpy.run_path(str(TOOLS / "augment_episodes_paraphrase.py"))["main"]
    assert main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--target_count", "50"]) == 0
    out = read(tmp_path / "o.jsonl")
    assert 1 < len(out) < 50 and "short of --target_count" in capsys.readouterr().out


def test_diversify_probability(tmp_path, capsys):
    records = [chat("Can you explain this?", "Sure.", "en"), chat("Give me a list.", "1, 2", "en")] * 5
    unchanged = [r for r, changed in diversify(records, 0.0) if not changed]
    assert unchanged == records
    changed = list(diversify(records, 1.0, seed=1))
    assert all(flag for _, flag in changed)
    assert all(r["_meta"]["augmented"] == "diversified" for r, _ in changed)
    src = write_jsonl(tmp_path / "in.jsonl", records)
    main = runpy.run_path(str(TOOLS / "diversify_user_messages.py"))["main"]
    assert main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--probability", "0.5"]) == 0
    assert len(read(tmp_path / "o.jsonl")) == 10 and "of 10 records" in capsys.readouterr().out
