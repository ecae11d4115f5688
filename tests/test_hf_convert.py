"""convert_hf_dataset: one small local file per real dataset schema, read with `datasets`.

The hub is unreachable here, so every layout is fed a file written in the dataset's own
column layout (OASST2's message table, Alpaca's instruction/input/output, ShareGPT's
conversations, Dolci's messages and tool-use turns, glaive-style function calling).
"""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path

import pytest
from helpers import write_jsonl

from mypt_lightning.data_prep.hf_convert import build_episode, convert_dataset, convert_rows, detect_layout
from mypt_lightning.data_prep.hf_layouts import Skip, parse_tool_calls
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import validate_episode

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def read(path: Path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def convert(tmp_path, rows, name="in.jsonl", **kw):
    src = write_jsonl(tmp_path / name, rows)
    report = convert_dataset(str(src), tmp_path / "out.jsonl", **kw)
    out = read(tmp_path / "out.jsonl")
    for record in out:
        validate_episode(record)
    return report, out


def msgs(record):
    return [(m["role"], m.get("content", m.get("name"))) for m in record["messages"]]


# ------------------------------------------------------------------ OASST2 message trees

def oasst_row(mid, parent, tree, role, text, lang="en", rank=None, deleted=False, date="2023-01-01"):
    return {"message_id": mid, "parent_id": parent, "user_id": "u", "created_date": date, "text": text,
            "role": role, "lang": lang, "review_count": 3, "review_result": True, "deleted": deleted,
            "rank": rank, "synthetic": False, "model_name": None,
            "detoxify": {"toxicity": 0.0, "severe_toxicity": 0.0, "obscene": 0.0, "identity_attack": 0.0,
                         "insult": 0.0, "threat": 0.0, "sexual_explicit": 0.0},
            "message_tree_id": tree, "tree_state": "ready_for_export",
            "emojis": {"name": ["+1"], "count": [2]}, "labels": {"name": ["quality"], "value": [0.8], "count": [3]}}


OASST_ROWS = [
    oasst_row("p1", None, "t1", "prompter", "What is Python?"),
    oasst_row("a1", "p1", "t1", "assistant", "A snake.", rank=1),
    oasst_row("a2", "p1", "t1", "assistant", "A programming language.", rank=0),
    oasst_row("a3", "p1", "t1", "assistant", "Deleted answer.", rank=2, deleted=True),
    oasst_row("p2", "a2", "t1", "prompter", "Who made it?", date="2023-01-02"),
    oasst_row("p3", "a2", "t1", "prompter", "Unanswered follow-up", date="2023-01-01"),
    oasst_row("a4", "p2", "t1", "assistant", "Guido van Rossum."),
    oasst_row("q1", None, "t2", "prompter", "Was ist Köln?", lang="de"),
    oasst_row("b1", "q1", "t2", "assistant", "Eine Stadt am Rhein.", lang="de"),
    oasst_row("r1", None, "t3", "prompter", "¿Qué es Python?", lang="es"),
    oasst_row("c1", "r1", "t3", "assistant", "Un lenguaje.", lang="es"),
    oasst_row("s1", None, "t4", "prompter", "Nobody answered this.", lang="en"),
]


def test_oasst2_trees_from_parquet(tmp_path):
    import datasets

    src = tmp_path / "oasst2.parquet"
    datasets.Dataset.from_list(OASST_ROWS).to_parquet(str(src))
    report = convert_dataset(str(src), tmp_path / "out.jsonl", languages=["en", "de"])
    out = read(tmp_path / "out.jsonl")
    assert report["layout"] == "oasst"
    assert [msgs(r) for r in out] == [
        [("user", "What is Python?"), ("assistant", "A programming language."),
         ("user", "Who made it?"), ("assistant", "Guido van Rossum.")],
        [("user", "Was ist Köln?"), ("assistant", "Eine Stadt am Rhein.")],
    ]
    assert [r["language"] for r in out] == ["en", "de"]
    assert out[0]["_meta"] == {"source": str(src), "layout": "oasst", "id": "t1"}
    assert report["skipped"]["language 'es' not selected"] == 1
    multi = convert_dataset(str(src), tmp_path / "multi.jsonl", languages=["en", "de"], min_turns=2)
    assert multi["episodes"] == 1 and multi["skipped"]["fewer than 2 turns"] == 1


# ------------------------------------------------------------------ instruction / chat layouts

def test_alpaca_gpt4_de_and_openschnabeltier(tmp_path):
    rows = [
        {"instruction": "Nenne drei Farben.", "input": "", "output": "Rot, Grün und Blau."},
        {"instruction": "Übersetze ins Englische.", "input": "Guten Morgen", "output": "Good morning"},
        {"instruction": "Leere Antwort", "input": "", "output": ""},
    ]
    report, out = convert(tmp_path, rows)
    assert report["layout"] == "alpaca" and report["skipped"]["empty instruction or output"] == 1
    assert [msgs(r) for r in out] == [
        [("user", "Nenne drei Farben."), ("assistant", "Rot, Grün und Blau.")],
        [("user", "Übersetze ins Englische.\n\nGuten Morgen"), ("assistant", "Good morning")]]
    assert out[0]["language"] == "de"
    schnabel = [{"instruction": "Name a prime.", "output": "Two is prime and even.", "instruction_de": "Nenne eine Primzahl.",
                 "output_de": "Zwei ist eine gerade Primzahl.", "data_source": "x"}]
    _, out = convert(tmp_path, schnabel, name="schnabel.jsonl", languages=["de"])
    assert msgs(out[0]) == [("user", "Nenne eine Primzahl."), ("assistant", "Zwei ist eine gerade Primzahl.")]


def test_sharegpt_german_rag_and_oasst_de(tmp_path):
    rows = [{"id": "rag-1", "conversations": [
        {"from": "system", "value": "Beantworte die Frage anhand des Kontexts."},
        {"from": "human", "value": "Kontext: Der Rhein fließt durch Köln.\n\nFrage: Welcher Fluss fließt durch Köln?"},
        {"from": "gpt", "value": "Der Rhein fließt durch Köln."}]},
        {"id": "rag-2", "conversations": [{"from": "gpt", "value": "Hallo!"}, {"from": "human", "value": "Was ist das?"},
                                         {"from": "gpt", "value": "Ein Test."}, {"from": "human", "value": "Danke"}]},
        {"id": "rag-3", "conversations": [{"from": "wizard", "value": "?"}]}]
    report, out = convert(tmp_path, rows)
    assert report["layout"] == "sharegpt"
    assert out[0]["system"] == "Beantworte die Frage anhand des Kontexts."
    assert msgs(out[0]) == [("user", rows[0]["conversations"][1]["value"]), ("assistant", "Der Rhein fließt durch Köln.")]
    assert out[0]["_meta"]["id"] == "rag-1" and out[0]["language"] == "de"
    # leading assistant greeting dropped, trailing unanswered user dropped
    assert msgs(out[1]) == [("user", "Was ist das?"), ("assistant", "Ein Test.")]
    assert report["skipped"]["unknown role 'wizard'"] == 1
    oasst_de = [{"conversation": [{"role": "prompter", "text": "Moin, wie geht's dir?"},
                                  {"role": "assistant", "text": "Moin Moin! Mir geht es gut, und dir?"}]}]
    _, out = convert(tmp_path, oasst_de, name="oasst_de.jsonl")
    assert msgs(out[0]) == [("user", "Moin, wie geht's dir?"), ("assistant", "Moin Moin! Mir geht es gut, und dir?")]


def test_messages_dolci_instruct_from_in_memory_dataset():
    import datasets

    rows = [{"id": "d1", "source": "tulu", "messages": [
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi there, what is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Germany?"}, {"role": "assistant", "content": "Berlin."}]},
        {"id": "d2", "source": "tulu", "messages": [{"role": "user", "content": "Only a question"}]}]
    ds = datasets.Dataset.from_list(rows)
    skipped: Counter = Counter()
    info: dict = {}
    out = list(convert_rows(ds, skipped=skipped, info=info, source="allenai/Dolci-Instruct-SFT",
                            system_prompt="You are MyPT."))
    assert info["layout"] == "messages"
    assert out == [{"system": "You are MyPT.", "messages": [
        {"role": "user", "content": "Hi there, what is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Germany?"}, {"role": "assistant", "content": "Berlin."}],
        "language": "en", "_meta": {"source": "allenai/Dolci-Instruct-SFT", "layout": "messages", "id": "d1"}}]
    assert skipped["no user message followed by an assistant answer"] == 1
    assert list(convert_rows(ds, max_examples=1, skipped=Counter()))[0]["system"] == "You are helpful."


# ------------------------------------------------------------------ tool use

FUNCTIONS = json.dumps([{"name": "search", "description": "Web search",
                         "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}])


def test_dolci_tool_use_calls_become_toolcall_and_toolresult(tmp_path):
    rows = [
        {"id": "t1", "dataset_source": "simfc", "messages": [
            {"role": "system", "content": "You are a helpful assistant.", "functions": FUNCTIONS},
            {"role": "user", "content": "Search ML for me"},
            {"role": "assistant", "content": "Let me search.", "function_calls": 'search(query="ML", top_k=3, exact=true)'},
            {"role": "environment", "content": '{"results": ["ml-101"]}'},
            {"role": "assistant", "content": "I found ml-101."}]},
        {"id": "t2", "dataset_source": "simfc", "messages": [
            {"role": "user", "content": "Weather in Berlin and Paris, one after the other"},
            {"role": "assistant", "content": "",
             "function_calls": 'get_weather(city="Berlin")\nget_weather(city="Paris", units={"temp": "C"})'},
            {"role": "environment", "content": "Berlin: 20C"},
            {"role": "environment", "content": "Paris: 22C"},
            {"role": "assistant", "content": "Berlin 20C, Paris 22C."}]},
        {"id": "t3", "dataset_source": "simfc", "messages": [
            {"role": "user", "content": "Two at once"},
            {"role": "assistant", "content": "", "function_calls": "a(x=1)\nb(y=2)"},
            {"role": "environment", "content": "both results"},
            {"role": "assistant", "content": "done"}]},
    ]
    report, out = convert(tmp_path, rows)
    assert report["layout"] == "dolci_tools" and len(out) == 2
    first = out[0]
    assert first["system"] == f"You are a helpful assistant.\n\nAvailable functions: {FUNCTIONS}"
    assert first["messages"] == [
        {"role": "user", "content": "Search ML for me"},
        {"role": "assistant_toolcall", "name": "search", "arguments": {"query": "ML", "top_k": 3, "exact": True},
         "think": "Let me search."},
        {"role": "toolresult", "name": "search", "content": {"results": ["ml-101"]}},
        {"role": "assistant", "content": "I found ml-101."}]
    assert msgs(out[1]) == [("user", rows[1]["messages"][0]["content"]), ("assistant_toolcall", "get_weather"),
                            ("toolresult", "Berlin: 20C"), ("assistant_toolcall", "get_weather"),
                            ("toolresult", "Paris: 22C"), ("assistant", "Berlin 20C, Paris 22C.")]
    assert out[1]["messages"][3]["arguments"] == {"city": "Paris", "units": {"temp": "C"}}
    assert report["skipped"]["parallel tool calls whose results cannot be told apart"] == 1
    _, dropped = convert(tmp_path, rows[:1], name="nodefs.jsonl", keep_tool_definitions=False)
    assert dropped[0]["system"] == "You are a helpful assistant."


def test_tool_call_syntaxes():
    assert parse_tool_calls('<function_calls>search(query="a b", n=2)</function_calls>') == [
        {"name": "search", "arguments": {"query": "a b", "n": 2}}]
    assert parse_tool_calls('{"name": "f", "arguments": "{\\"x\\": 1}"}') == [{"name": "f", "arguments": {"x": 1}}]
    assert parse_tool_calls('[{"name": "f", "arguments": {}}, {"name": "g", "parameters": {"y": [1]}}]') == [
        {"name": "f", "arguments": {}}, {"name": "g", "arguments": {"y": [1]}}]
    xml = '<invoke name="search"><parameter name="query">ML</parameter><parameter name="k">3</parameter></invoke>'
    assert parse_tool_calls(xml) == [{"name": "search", "arguments": {"query": "ML", "k": 3}}]
    assert parse_tool_calls("workspace.search(query=None)") == [{"name": "workspace.search", "arguments": {"query": None}}]
    for bad in ("", "print(1) + 2", "f(1, 2)", "f(x=os.system('rm'))"):
        with pytest.raises(Skip):
            parse_tool_calls(bad)


@pytest.mark.parametrize("body", [
    "[" * 10000,                                                    # JSON nested past any limit
    '{"name": "f", "arguments": "' + "[" * 10000 + '"}',            # ... inside the arguments string
    '{"name": "f", "arguments": {"a": ' + "1" * 10000 + "}}",       # a 10000-digit integer
    '{"name": "f", "name": "g", "arguments": {}}',                  # a duplicate key
    "f(a=" + "[" * 3000 + "]" * 3000 + ")",                         # python-call syntax nested deep
    "f(a=" + "1" * 10000 + ")",
])
def test_hostile_tool_call_strings_are_skipped_not_crashes(body):
    """Tool calls in HF rows are untrusted text: each hostile one is a skipped row (counted by
    the converter), never a RecursionError or ValueError."""
    with pytest.raises(Skip):
        parse_tool_calls(body)


def test_glaive_style_german_function_calling(tmp_path):
    system = ('SYSTEM: Du bist ein hilfreicher Assistent mit Zugriff auf folgende Funktionen -\n'
              '{"name": "get_weather", "parameters": {"city": {"type": "string"}}}')
    chat = ('USER: Wie ist das Wetter in Berlin?\n\n\nASSISTANT: <functioncall> {"name": "get_weather", '
            '"arguments": \'{"city": "Berlin"}\'} <|endoftext|>\n\n\nFUNCTION RESPONSE: {"temperature": 20}\n\n\n'
            'ASSISTANT: In Berlin sind es 20 Grad. <|endoftext|>\n\n\nUSER: Danke!\n\n\n'
            'ASSISTANT: Gern geschehen! <|endoftext|>\n')
    report, out = convert(tmp_path, [{"system": system, "chat": chat}])
    assert report["layout"] == "glaive"
    record = out[0]
    assert record["system"].startswith("Du bist ein hilfreicher Assistent")
    assert record["messages"] == [
        {"role": "user", "content": "Wie ist das Wetter in Berlin?"},
        {"role": "assistant_toolcall", "name": "get_weather", "arguments": {"city": "Berlin"}},
        {"role": "toolresult", "name": "get_weather", "content": {"temperature": 20}},
        {"role": "assistant", "content": "In Berlin sind es 20 Grad."},
        {"role": "user", "content": "Danke!"}, {"role": "assistant", "content": "Gern geschehen!"}]
    assert record["language"] == "de"


def test_sharegpt_function_roles_and_openai_tool_calls():
    rows = [{"conversations": [
        {"from": "human", "value": "Rechne 2+2"},
        {"from": "function_call", "value": '{"name": "calc", "arguments": {"expr": "2+2"}}'},
        {"from": "observation", "value": "4"},
        {"from": "gpt", "value": "Das Ergebnis ist 4."}]}]
    out = list(convert_rows(rows, skipped=Counter()))
    assert msgs(out[0]) == [("user", "Rechne 2+2"), ("assistant_toolcall", "calc"), ("toolresult", "4"),
                            ("assistant", "Das Ergebnis ist 4.")]
    openai = [{"messages": [
        {"role": "user", "content": "Find cats"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "find", "arguments": '{"q": "cats"}'}}]},
        {"role": "tool", "content": '{"hits": 3}'}, {"role": "assistant", "content": "3 hits."}]}]
    out = list(convert_rows(openai, skipped=Counter()))
    assert out[0]["messages"][1] == {"role": "assistant_toolcall", "name": "find", "arguments": {"q": "cats"}}
    assert out[0]["messages"][2] == {"role": "toolresult", "name": "find", "content": {"hits": 3}}


# ------------------------------------------------------------------ detection, limits, CLI

def test_detect_layout_and_unknown_columns():
    assert detect_layout({"message_id": 1, "parent_id": None, "role": "prompter", "text": "x"}) == "oasst"
    assert detect_layout({"instruction": "", "input": "", "output": ""}) == "alpaca"
    assert detect_layout({"conversations": []}) == "sharegpt"
    assert detect_layout({"messages": [{"role": "user", "content": "x"}]}) == "messages"
    assert detect_layout({"messages": [{"role": "environment", "content": "x"}]}) == "dolci_tools"
    assert detect_layout({"system": "", "chat": ""}) == "glaive"
    with pytest.raises(UserError, match="--layout"):
        detect_layout({"prompt": "x", "completion": "y"})


def test_build_episode_rejects_what_the_schema_cannot_hold():
    with pytest.raises(Skip, match="empty user"):
        build_episode([("user", "  "), ("assistant", "a")])
    with pytest.raises(Skip, match="no user message"):
        build_episode([("system", "s"), ("assistant", "a")])
    merged = build_episode([("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d")])
    assert merged["messages"] == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c\n\nd"}]


def test_cli_max_examples_languages_and_errors(tmp_path, capsys):
    rows = [{"instruction": f"Frage {i}: was ist das und wie geht das?", "input": "", "output": "Das ist eine Antwort."}
            for i in range(5)] + [{"instruction": "What is this and how does it work?", "input": "", "output": "It is a test."}]
    src = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    main = runpy.run_path(str(TOOLS / "convert_hf_dataset.py"))["main"]
    assert main(["--dataset", str(src), "--output", str(tmp_path / "o.jsonl"), "--languages", "en", "de",
                 "--max_examples", "3"]) == 0
    assert len(read(tmp_path / "o.jsonl")) == 3
    assert main(["--dataset", str(src), "--output", str(tmp_path / "en.jsonl"), "--languages", "en"]) == 0
    assert [r["language"] for r in read(tmp_path / "en.jsonl")] == ["en"]
    assert "skipped 5 rows" in capsys.readouterr().out
    (tmp_path / "x.txt").write_text("hello")
    assert main(["--dataset", str(tmp_path / "x.txt"), "--output", str(tmp_path / "z.jsonl")]) == 2
    assert "unknown file type" in capsys.readouterr().err
    assert not (tmp_path / "z.jsonl").exists()
