"""Data generators: determinism, schema validity + serialization, language share, and each
phase's own property (answer length, echo contrast, operator split disjointness, grounding,
turn counts, NO_TOOL share, tool results equal to the engine's, multi-step patterns,
replay sampling, context-extension schemas and gold positions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import write_jsonl

from mypt_lightning.generators import (
    agent,
    common,
    context_extension,
    echo,
    format_lock,
    multiturn,
    operators,
    pretrain_replay,
    rag_chat,
    tool_episodes,
)
from mypt_lightning.generators.tooluse import ToolSession, Unsupported
from mypt_lightning.tokens.protocol import serialize_episode, validate_episode
from mypt_lightning.tokens.system_prompts import (
    AGENTIC_SYSTEM_PROMPTS,
    CHAT_SYSTEM_PROMPTS,
    MINIMAL_SYSTEM_PROMPT,
    prompts_for_phase,
    system_prompt_for_phase,
)
from mypt_lightning.tokens.tokenizer import get_tokenizer
from mypt_lightning.workspace.store import Workspace

REPO = Path(__file__).resolve().parents[1]
N = 250  # records per generator run in these tests


@pytest.fixture(scope="module")
def ws():
    return Workspace()


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


# ----------------------------------------------------------------------------- fixtures: data
@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, tok):
    """uint16 and uint32 token shards of the workspace corpus, documents separated by <|endoftext|>."""
    d = tmp_path_factory.mktemp("shards")
    ids = []
    for f in sorted((REPO / "workspace" / "docs").glob("*.md")):
        ids += tok.encode_text(f.read_text(encoding="utf-8")) + [50256]
    np.asarray(ids, dtype=np.uint16).tofile(d / "shard_000.bin")
    np.asarray(ids, dtype=np.uint32).tofile(d / "wide.bin32")  # not picked up by discovery (suffix)
    return d


def _qa_rows() -> dict[str, list[dict]]:
    """Small files in the real schema of each source (field names and nesting as on the hub)."""
    cities = ["Aachen", "Bergen", "Cork", "Dijon", "Essen", "Faro", "Graz", "Haarlem", "Ieper", "Jena"]
    rivers = ["Wurm", "Byelva", "Lee", "Ouche", "Ruhr", "Rio Seco", "Mur", "Spaarne", "Ijzer", "Saale"]
    squad, germanquad, hotpot, musique, msmarco, trivia = [], [], [], [], [], []
    for i, (city, river) in enumerate(zip(cities, rivers)):
        ctx = f"{city} is a town with a long history. The river {river} flows through {city}. Markets are held on Saturdays."
        start = ctx.index(river)
        squad.append({"id": f"sq{i}", "title": f"{city}_(town)", "context": ctx,
                      "question": f"Which river flows through {city}?",
                      "answers": {"text": [river] if i % 4 else [], "answer_start": [start] if i % 4 else []}})
        de_ctx = f"{city} ist eine Stadt mit langer Geschichte. Durch {city} fließt der Fluss {river}."
        germanquad.append({"id": 1000 + i, "context": f"{city}\n\n{de_ctx}", "question": f"Welcher Fluss fließt durch {city}?",
                           "answers": {"text": [river], "answer_start": [de_ctx.index(river)]}})
        titles = [f"{c} (town)" for c in cities]
        sentences = [[f"{c} is a town. ", f"The river {r} flows through {c}."] for c, r in zip(cities, rivers)]
        other = (i + 1) % len(cities)
        hotpot.append({"id": f"hp{i}", "question": f"Which river flows through the town next to {cities[other]} in the list?",
                       "answer": river, "type": "bridge", "level": "hard",
                       "supporting_facts": {"title": [titles[i], titles[other]], "sent_id": [1, 0]},
                       "context": {"title": titles, "sentences": sentences}})
        musique.append({"id": f"2hop__{i}", "question": f"What flows through {city}?", "answer": river,
                        "answer_aliases": [], "answerable": i % 5 != 0,
                        "question_decomposition": [{"id": i, "question": f"{city} river?", "answer": river,
                                                    "paragraph_support_idx": i}],
                        "paragraphs": [{"idx": j, "title": c, "paragraph_text": f"The river {r} flows through {c}.",
                                        "is_supporting": j == i} for j, (c, r) in enumerate(zip(cities, rivers))]})
        msmarco.append({"query": f"river through {city}", "query_id": 500 + i, "query_type": "LOCATION",
                        "answers": [river] if i % 3 else ["No Answer Present."], "wellFormedAnswers": [],
                        "passages": {"is_selected": [int(j == i) for j in range(len(cities))],
                                     "passage_text": [f"The river {r} flows through {c}." for c, r in zip(cities, rivers)],
                                     "url": [f"https://www.{c.lower()}.example/rivers" for c in cities]}})
        long_wiki = " ".join(f"Filler sentence {k} about {city}." for k in range(400)) + f" The {river} is its river."
        trivia.append({"question": f"Name the river of {city}.", "question_id": f"tq{i}", "question_source": "web",
                       "entity_pages": {"doc_source": ["TagMe"], "filename": [f"{city}.txt"], "title": [city],
                                        "wiki_context": [long_wiki]},
                       "search_results": {"description": ["d"], "filename": ["s.txt"], "rank": [1], "title": ["Travel"],
                                          "url": ["https://travel.example"], "search_context": [f"Visit {cities[other]}."]},
                       "answer": {"aliases": [river], "normalized_aliases": [river.lower()], "matched_wiki_entity_name": "",
                                  "normalized_matched_wiki_entity_name": "", "normalized_value": river.lower(),
                                  "type": "WikipediaEntity", "value": river}})
    return {"squad_v2": squad, "germanquad": germanquad, "hotpotqa": hotpot, "musique": musique,
            "msmarco": msmarco, "triviaqa": trivia}


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {name: str(write_jsonl(d / f"{name}.jsonl", rows)) for name, rows in _qa_rows().items()}


# ----------------------------------------------------------------------------- the generator table
def _run(name: str, seed: int, language: str, n: int = N, **kw):
    """Records of one generator (operators: train split)."""
    if name == "format_lock":
        return format_lock.generate(n, seed, language, **kw).records
    if name == "echo":
        return echo.generate(n, seed, language, gibberish="include", **kw).records
    if name == "operators":
        return operators.generate(n, seed, language, **kw).train.records
    if name == "rag_chat":
        return rag_chat.generate(n, seed, language, **kw).records
    if name == "multiturn":
        return multiturn.generate(n, seed, language, **kw).records
    if name == "agent":
        return agent.generate(n, seed, language, **kw).records
    if name == "tool_episodes":
        return tool_episodes.generate(n, seed, language, **kw).records
    raise KeyError(name)


EPISODE_GENERATORS = ["format_lock", "echo", "operators", "rag_chat", "multiturn", "agent", "tool_episodes"]


def _cli_argv(name: str, out: Path, seed: int, shard_dir: Path, qa_files: dict) -> tuple:
    base = ["--output", str(out), "--num_examples", "60", "--seed", str(seed)]
    modules = {"format_lock": format_lock, "echo": echo, "operators": operators, "rag_chat": rag_chat,
               "multiturn": multiturn, "agent": agent, "tool_episodes": tool_episodes,
               "pretrain_replay": pretrain_replay, "context_extension": context_extension}
    extra = {"pretrain_replay": ["--inputs", str(shard_dir), "--max_tokens", "64"],
             "context_extension": [f"--source={k}={v}" for k, v in qa_files.items()],
             "echo": ["--gibberish", "include"]}.get(name, [])
    return modules[name], base + ["--language", "any" if name == "pretrain_replay" else "mixed"] + extra


@pytest.mark.parametrize("name", EPISODE_GENERATORS + ["pretrain_replay", "context_extension"])
def test_cli_is_deterministic_and_atomic(name, tmp_path, shard_dir, qa_files, capsys):
    outputs = []
    for i, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"{i}.jsonl"
        module, argv = _cli_argv(name, out, seed, shard_dir, qa_files)
        assert module.main(argv) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1], "same seed must give the same bytes"
    assert outputs[0] != outputs[2], "another seed must give other data"
    printed = capsys.readouterr().out
    assert "distinct templates" in printed and "records" in printed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


@pytest.mark.parametrize("name", EPISODE_GENERATORS)
def test_every_record_validates_and_serializes(name, tok):
    records = _run(name, seed=3, language="mixed")
    assert len(records) == N
    for i, record in enumerate(records):
        validate_episode(record, where=f"{name}[{i}]")
        for weighted in (False, True):
            tokens, weights = serialize_episode(record, weighted=weighted, tokenizer=tok)
            assert len(tokens) == len(weights) and max(weights) > 0
        assert record["language"] in ("en", "de")
        assert record["_meta"]["template"]


@pytest.mark.parametrize("name", EPISODE_GENERATORS)
def test_language_modes(name):
    mixed = Counter(r["language"] for r in _run(name, seed=5, language="mixed", n=120))
    assert mixed["de"] / 120 >= 0.3 and mixed["en"] > 0
    for lang in ("en", "de"):
        assert {r["language"] for r in _run(name, seed=5, language=lang, n=40)} == {lang}


def test_language_plan_keeps_30_percent_german_even_when_tiny():
    for n in (1, 2, 3, 7, 10, 101):
        plan = common.language_plan(n, "mixed", common.make_rng(0, "x"))
        assert plan.count("de") / n >= 0.3
    with pytest.raises(ValueError):
        common.language_plan(10, "mixed", common.make_rng(0), de_share=0.1)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def boom(src, dst):
        raise OSError("disk full")

    import data_modules.atomic_write as atomic_write

    monkeypatch.setattr(atomic_write.os, "replace", boom)
    with pytest.raises(OSError):
        common.write_jsonl_atomic(target, [{"a": 1}])
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_invalid_record_stops_the_cli_before_writing(tmp_path):
    stats = common.GenerationStats("broken")
    bad = common.Generated([{"messages": [{"role": "assistant", "content": "x"}]}], stats)
    with pytest.raises(ValueError, match="starts with a user message"):
        common.finish(bad, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("tool", sorted(p.name for p in (REPO / "tools").glob("generate_*.py"))
                         + ["build_context_extension_dataset.py"])
def test_tool_scripts_explain_themselves(tool):
    result = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--help"], capture_output=True, text=True,
                            cwd=REPO, check=True)
    for flag in ("--output", "--num_examples", "--seed", "--language"):
        assert flag in result.stdout


# ----------------------------------------------------------------------------- system prompts
def test_system_prompt_tiers():
    assert prompts_for_phase(1) == prompts_for_phase(2) == (MINIMAL_SYSTEM_PROMPT,) == ("You are MyPT.",)
    assert len(CHAT_SYSTEM_PROMPTS) == 4 and prompts_for_phase("phase4_multiturn") == CHAT_SYSTEM_PROMPTS
    assert len(AGENTIC_SYSTEM_PROMPTS) == 8 == len(set(AGENTIC_SYSTEM_PROMPTS))
    for prompt in AGENTIC_SYSTEM_PROMPTS:
        for tool in ("workspace.search", "workspace.list_docs", "workspace.get_doc", "workspace.summarize"):
            assert tool in prompt
    tok = get_tokenizer()
    assert all(len(tok.encode_text(p)) <= 30 for p in CHAT_SYSTEM_PROMPTS)
    assert all(len(tok.encode_text(p)) <= 110 for p in AGENTIC_SYSTEM_PROMPTS)
    rng = common.make_rng(1, "sp")
    assert {system_prompt_for_phase(6, rng) for _ in range(200)} == set(AGENTIC_SYSTEM_PROMPTS)
    assert system_prompt_for_phase(3) == CHAT_SYSTEM_PROMPTS[0]
    for bad in (0, 7, "phase1b_context_ext", True):
        with pytest.raises(ValueError):
            prompts_for_phase(bad)


# ----------------------------------------------------------------------------- phase 1
def test_format_lock_answers_are_1_to_5_tokens(tok):
    records = format_lock.generate(600, 11, "mixed").records
    assert all(1 <= len(tok.encode_text(r["messages"][1]["content"])) <= 5 for r in records)
    assert all(r["system"] == "You are MyPT." for r in records)
    cats = Counter(r["_meta"]["category"] for r in records)
    assert len(cats) == 11 and cats["math"] > 0
    assert "math" not in {r["_meta"]["category"] for r in format_lock.generate(300, 11, "mixed", math="exclude").records}
    simple = format_lock.generate(300, 11, "en", mode="simple").records
    assert all(r["_meta"]["template"].count("/") == 2 for r in simple)
    full_prompts = {r["messages"][0]["content"] for r in format_lock.generate(300, 11, "en").records}
    assert len(full_prompts) > len({r["messages"][0]["content"] for r in simple})


def test_format_lock_answers_are_correct():
    records = format_lock.generate(400, 2, "mixed").records
    for r in records:
        q, a = r["messages"][0]["content"], r["messages"][1]["content"]
        m = re.search(r"(\d+) (plus|\+) (\d+)", q)
        if r["_meta"]["category"] == "math" and m:
            assert int(a) == int(m.group(1)) + int(m.group(3))
        if "capital of france" in q.lower() or "hauptstadt von frankreich" in q.lower():
            assert a == "Paris"


def test_echo_and_anti_echo_contrast():
    gen = echo.generate(600, 4, "mixed", gibberish="include", anti_echo_share=0.4)
    records = gen.records
    cats = Counter(r["_meta"]["category"] for r in records)
    assert cats["anti_echo"] == 240
    for r in records:
        prompt, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        if r["_meta"]["category"] == "echo":
            assert answer in prompt
        if r["_meta"]["category"] == "anti_echo":
            quoted = re.findall(r'"([^"]+)"', prompt)
            assert all(answer != q for q in quoted), "anti-echo must not be answered by copying the payload"
            assert not prompt.endswith(answer) or len(answer.split()) <= 1
    kinds = lambda rs: {r["_meta"]["template"].rsplit("/", 1)[-1] for r in rs}  # noqa: E731
    assert "gibberish" in kinds(records)
    assert "gibberish" not in kinds(echo.generate(300, 4, "mixed", gibberish="exclude").records)


# ----------------------------------------------------------------------------- phase 2
def _skeleton(record: dict) -> str:
    return record["messages"][0]["content"].replace(record["_meta"]["payload"], "{p}")


def test_operator_train_and_val_share_no_payloads_and_no_templates():
    data = operators.generate(800, 9, "mixed", val_examples=200)
    train, val = data.train.records, data.val.records
    assert len(train) == 800 and len(val) == 200
    payloads = lambda rs: {r["_meta"]["payload"].lower() for r in rs}  # noqa: E731
    assert not payloads(train) & payloads(val)
    # Independent of template ids: the instruction text with the payload cut out.
    assert not {_skeleton(r) for r in train} & {_skeleton(r) for r in val}
    assert data.disjointness["shared_payloads"] == 0 and data.disjointness["shared_templates"] == 0
    assert {r["_meta"]["split"] for r in train} == {"train"} and {r["_meta"]["split"] for r in val} == {"val"}
    assert any("0 shared" in n for n in data.train.stats.notes)
    for op in operators.OPERATORS:
        assert any(r["_meta"]["operator"] == op for r in val)


def test_operator_check_disjoint_raises_on_overlap():
    records = operators.generate(40, 1, "en").train.records
    with pytest.raises(ValueError, match="overlap"):
        operators.check_disjoint(records, records[:3])


def test_operator_answers_and_contrastive_pairs():
    records = operators.generate(500, 12, "mixed", pair_share=0.6).train.records
    for r in records:
        meta, prompt, answer = r["_meta"], r["messages"][0]["content"], r["messages"][1]["content"]
        if meta["operator"] == "COPY":
            assert answer == meta["payload"]
        elif meta["operator"] == "WRAP":
            left, right = operators.WRAPPERS[meta["wrapper"]][:2]
            assert answer == f"{left}{meta['payload']}{right}"
        else:
            left, right = operators.WRAPPERS[meta["wrapper"]][:2]
            assert answer == meta["payload"] and f"{left}{answer}{right}" in prompt
    pairs: dict[str, list] = {}
    for r in records:
        if "pair" in r["_meta"]:
            pairs.setdefault(r["_meta"]["pair"], []).append(r)
    assert len(pairs) > 50
    for members in pairs.values():
        a, b = members
        assert a["_meta"]["payload"] == b["_meta"]["payload"] and a["language"] == b["language"]
        assert (a["_meta"]["operator"], a["_meta"].get("wrapper")) != (b["_meta"]["operator"], b["_meta"].get("wrapper"))
        assert a["messages"][1]["content"] != b["messages"][1]["content"]


def test_operator_cli_writes_both_splits(tmp_path, capsys):
    out = tmp_path / "ops.jsonl"
    assert operators.main(["--output", str(out), "--num_examples", "50", "--seed", "3"]) == 0
    val = tmp_path / "ops.val.jsonl"
    assert len(out.read_text().splitlines()) == 50 and len(val.read_text().splitlines()) == 5
    assert "train/val disjoint" in capsys.readouterr().out


# ----------------------------------------------------------------------------- phase 3
def test_rag_chat_is_grounded_and_unanswerable_cases_say_so(ws):
    gen = rag_chat.generate(400, 6, "mixed", unanswerable_share=0.15)
    cats = Counter(r["_meta"]["category"] for r in gen.records)
    assert cats["unanswerable"] == 60
    for r in gen.records:
        user, answer = r["messages"]
        assert user["context"].startswith("[") and r["system"] in CHAT_SYSTEM_PROMPTS
        if r["_meta"]["category"] == "answerable":
            doc = ws.get_doc(answer["cite"])
            assert answer["cite"] == r["_meta"]["fact_doc"] and f"[{doc['doc_id']}]" in user["context"]
            assert doc["language"] == r["language"]
        else:
            assert "cite" not in answer and r["_meta"]["fact_doc"] not in user["context"]
            assert re.search(r"not contain|can't answer|don't mention|keine Angaben|nicht beantworten|leider nichts",
                             answer["content"])
    assert sum("think" in r["messages"][1] for r in gen.records) > 250


# ----------------------------------------------------------------------------- phase 4
def test_multiturn_turn_counts_language_and_grounding(ws):
    records = multiturn.generate(400, 8, "mixed").records
    assert set(Counter(r["_meta"]["category"] for r in records)) == set(multiturn.CATEGORIES)
    turn_counts = Counter()
    for r in records:
        msgs = r["messages"]
        turns = sum(m["role"] == "user" for m in msgs)
        assert 2 <= turns <= 4 and turns == r["_meta"]["turns"]
        turn_counts[turns] += 1
        seen = ""
        for m in msgs:
            seen += m.get("context", "") + (m["content"] if m["role"] == "assistant_context" else "")
            if m["role"] == "assistant" and "cite" in m:
                assert f"[{m['cite']}]" in seen, "an answer cites a document the conversation has not shown"
        if "language_switch" not in r["_meta"]:
            langs = {ws.resolve(m["cite"]).language for m in msgs if "cite" in m}
            assert langs <= {r["language"]}
    assert set(turn_counts) == {2, 3, 4}
    assert any("language_switch" in r["_meta"] for r in records)
    assert not any("language_switch" in r["_meta"] for r in multiturn.generate(100, 8, "en").records)
    assert any(m["role"] == "assistant_context" for r in records for m in r["messages"])


# ----------------------------------------------------------------------------- phases 5 and 6
def _check_results_are_real(records, ws):
    calls = 0
    for r in records:
        msgs = r["messages"]
        for call, result in zip(msgs, msgs[1:]):
            if call["role"] == "assistant_toolcall":
                assert result["role"] == "toolresult" and result["name"] == call["name"]
                assert result["content"] == ws.call(call["name"], call["arguments"])
                calls += 1
    return calls


def test_agent_shares_and_real_tool_results(ws):
    records = agent.generate(500, 10, "mixed").records
    cats = Counter(r["_meta"]["category"] for r in records)
    assert cats["NO_TOOL"] == 100 and cats["WRONG_TOOL"] == 40
    assert set(cats) == {"NO_TOOL", "WRONG_TOOL", "SEARCH", "GET_DOC", "LIST", "SUMMARIZE"}
    assert _check_results_are_real(records, ws) > 350
    for r in records:
        calls = [m for m in r["messages"] if m["role"] == "assistant_toolcall"]
        final = r["messages"][-1]
        assert r["system"] in AGENTIC_SYSTEM_PROMPTS
        if r["_meta"]["category"] == "NO_TOOL":
            assert not calls
        elif r["_meta"]["category"] == "WRONG_TOOL":
            assert len(calls) == 2 and calls[0]["name"] != calls[1]["name"] and "think" in calls[1]
        else:
            assert len(calls) == 1
        if "cite" in final:
            results = json.dumps([m["content"] for m in r["messages"] if m["role"] == "toolresult"], ensure_ascii=False)
            assert final["cite"] in results
    assert sum("think" in r["messages"][-1] for r in records) > 200


def test_tool_episode_patterns_steps_and_real_results(ws):
    records = tool_episodes.generate(400, 13, "mixed").records
    patterns = Counter(r["_meta"]["pattern"] for r in records)
    assert set(patterns) == set(tool_episodes.PATTERNS) and patterns["NO_TOOL"] == 80
    assert _check_results_are_real(records, ws) > 400
    expected_steps = {"NO_TOOL": 0, "SEARCH_ANSWER": 1, "SEARCH_GETDOC_ANSWER": 2, "LIST_SELECT_SUMMARIZE": 2,
                      "ERROR_RECOVERY": 2}
    for r in records:
        msgs, pattern = r["messages"], r["_meta"]["pattern"]
        calls = [m for m in msgs if m["role"] == "assistant_toolcall"]
        results = [m["content"] for m in msgs if m["role"] == "toolresult"]
        assert len(calls) == expected_steps[pattern] == r["_meta"]["tool_calls"]
        if pattern == "ERROR_RECOVERY":
            assert "error" in results[0] and "error" not in results[1] and "think" in calls[1]
        elif results:
            assert not any("error" in x for x in results)
        if pattern == "SEARCH_GETDOC_ANSWER":
            assert [c["name"] for c in calls] == ["workspace.search", "workspace.get_doc"]
            assert calls[1]["arguments"]["doc_id"] == results[0]["documents"][0]["doc_id"]
        if pattern == "LIST_SELECT_SUMMARIZE":
            assert [c["name"] for c in calls] == ["workspace.list_docs", "workspace.summarize"]
            assert results[1]["summary"] in msgs[-1]["content"]
        if pattern != "NO_TOOL" and "cite" in msgs[-1]:
            assert msgs[-1]["cite"] in json.dumps(results, ensure_ascii=False)


def test_unsupported_answers_are_rejected(ws):
    s = ToolSession(ws, "When was the Hanseatic League founded?")
    s.call("workspace.search", {"query": "Hanseatic League"})
    with pytest.raises(Unsupported):
        s.answer("It was founded in 1066.", support=["founded in 1066"])
    s.answer("It is about the Hanse.", support=["The Hanseatic League"])  # a title in the result supports it
    assert s.messages[-1] == {"role": "assistant", "content": "It is about the Hanse."}
    err = ToolSession(ws, "x")
    err.call("workspace.get_doc", {"doc_id": "missing"}, expect_error=True)
    with pytest.raises(Unsupported):  # error objects never support an answer
        err.answer("missing", support=["missing"])
    with pytest.raises(Unsupported):
        ToolSession(ws, "x").call("workspace.get_doc", {"doc_id": "missing"})


def test_tool_episode_rejections_are_counted():
    gen = tool_episodes.generate(200, 2, "mixed")
    assert sum(gen.stats.rejected.values()) > 0  # e.g. snippets that already answer SEARCH_GETDOC questions
    assert "rejected" in gen.stats.report()


# ----------------------------------------------------------------------------- replay
def test_pretrain_replay_from_token_shards(shard_dir, tok):
    full = tok.decode(np.fromfile(shard_dir / "shard_000.bin", dtype=np.uint16).tolist())
    gen = pretrain_replay.generate(40, 1, "mixed", inputs=[shard_dir], max_tokens=96, min_tokens=16)
    assert Counter(r["language"] for r in gen.records)["de"] >= 12
    for r in gen.records:
        validate_episode(r)
        assert r["_replay"] is True and "<|endoftext|>" not in r["text"]
        assert r["_meta"]["tokens"] <= 96
        assert r["text"][:40] in full
    tokens, weights = serialize_episode(gen.records[0], tokenizer=tok)
    assert set(weights) == {1.0}


def test_pretrain_replay_uint32_text_and_jsonl(tmp_path, tok):
    ids = tok.encode_text((REPO / "workspace/docs/sci-plates-en.md").read_text(encoding="utf-8"))
    np.asarray(ids, dtype=np.uint32).tofile(tmp_path / "s.bin")
    recs = pretrain_replay.generate(5, 1, "en", inputs=[tmp_path / "s.bin"], token_dtype="uint32", max_tokens=64).records
    assert all("plate" in r["text"].lower() or "earth" in r["text"].lower() or len(r["text"]) > 20 for r in recs)
    (tmp_path / "t.txt").write_text((REPO / "workspace/docs/sci-schlaf-de.md").read_text(encoding="utf-8"), encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", [{"text": "Ein kurzer Text über den Schlaf und die Träume in der Nacht. " * 10}])
    recs = pretrain_replay.generate(6, 2, "de", inputs=[tmp_path / "t.txt", tmp_path / "d.jsonl"], max_tokens=64,
                                    min_tokens=8).records
    assert len(recs) == 6 and {r["language"] for r in recs} == {"de"}
    mega = pretrain_replay.generate(2, 3, "any", inputs=sorted((REPO / "workspace" / "docs").glob("*.md")),
                                    max_tokens=64, min_tokens=8,
                                    mega_tokens=300).records
    assert all(r["_meta"]["tokens"] >= 270 and r["_meta"]["documents"] > 1 for r in mega)


def test_pretrain_replay_refuses_bad_inputs(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="not a multiple"):
        pretrain_replay.discover_sources([tmp_path / "odd.bin"])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported file type"):
        pretrain_replay.discover_sources([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError):
        pretrain_replay.discover_sources([tmp_path / "missing"])
    (tmp_path / "en.txt").write_text("The weather is nice and the sun is shining over the hills today. " * 30)
    with pytest.raises(ValueError, match="lack\\s+that language"):
        pretrain_replay.generate(3, 0, "de", inputs=[tmp_path / "en.txt"], max_tokens=64, min_tokens=8)


# ----------------------------------------------------------------------------- phase 1b
def _blocks(text: str) -> list[str]:
    body = text.rsplit("\n\n", 1)[0]
    return re.split(r"\n\n(?=(?:Passage|Abschnitt) \d+:)", body)


@pytest.mark.parametrize("name", sorted(context_extension.CONVERTERS))
def test_context_extension_reads_each_real_schema(name, qa_files):
    gen = context_extension.generate(8, 4, "mixed", sources=[(name, qa_files[name])], num_distractors=3)
    assert gen.records, gen.stats.report()
    lang = "de" if name == "germanquad" else "en"
    for r in gen.records:
        validate_episode(r)
        text, meta = r["text"], r["_meta"]
        assert r["_replay"] is True and r["language"] == lang and meta["source"] == name
        label_q = "Frage" if lang == "de" else "Question"
        assert f"\n\n{label_q}: " in text
        blocks = _blocks(text)
        assert len(blocks) == meta["passages"] >= 2
        answer_line = text.rsplit("\n", 1)[-1]
        if meta["answerable"]:
            answer = answer_line.split(": ", 1)[1]
            assert any(answer.lower() in blocks[p - 1].lower() for p in meta["gold_positions"])
        else:
            assert "do not contain" in answer_line or "nicht" in answer_line


def test_context_extension_varies_gold_position_and_marks_unanswerable(qa_files):
    rows = _qa_rows()["squad_v2"] * 6  # 60 rows, 15 unanswerable
    gen = context_extension.generate(60, 1, "en", sources=[("squad_v2", [dict(r, id=f"{r['id']}-{k}") for k, r in
                                                                        enumerate(rows)])], num_distractors=4)
    positions = Counter(r["_meta"]["gold_positions"][0] for r in gen.records)
    assert len(positions) >= 4, positions
    assert any(not r["_meta"]["answerable"] for r in gen.records)
    hotpot = context_extension.generate(10, 1, "en", sources=[("hotpotqa", qa_files["hotpotqa"])]).records
    assert all(len(r["_meta"]["gold_positions"]) == 2 for r in hotpot)
    assert len({tuple(r["_meta"]["gold_positions"]) for r in hotpot}) > 1


def test_context_extension_language_quota_and_long_evidence(qa_files):
    sources = [(k, v) for k, v in qa_files.items()]
    gen = context_extension.generate(20, 2, "mixed", sources=sources)
    langs = Counter(r["language"] for r in gen.records)
    assert langs["de"] / sum(langs.values()) >= 0.3
    only_en = context_extension.generate(10, 2, "en", sources=sources).records
    assert {r["language"] for r in only_en} == {"en"}
    trivia = context_extension.generate(5, 2, "en", sources=[("triviaqa", qa_files["triviaqa"])], max_chars=5000).records
    assert all(len(r["text"]) <= 5000 for r in trivia)
    with pytest.raises(ValueError, match="NAME=SPEC"):
        context_extension.parse_source("squad=foo.jsonl")
    with pytest.raises(ValueError, match="schema"):
        context_extension.generate(2, 0, "en", sources=[("hotpotqa", [{"question": "q"}])])
