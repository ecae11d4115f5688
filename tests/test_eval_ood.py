"""Held-out OOD evaluation sets (data/eval_ood): schema, references, and phrasings no generator produces."""

from __future__ import annotations

import ast
import json
import re
import string
from functools import lru_cache
from pathlib import Path

import pytest

from mypt_lightning.data_prep.textnorm import normalize_loose
from mypt_lightning.gates.language import same_language
from mypt_lightning.gates.ood import ood_files, read_episodes
from mypt_lightning.generators import agent, echo, format_lock, multiturn, operators, rag_chat, tool_episodes
from mypt_lightning.generators.qa_bank import load_facts
from mypt_lightning.tokens.protocol import parse_episode_line, serialize_episode
from mypt_lightning.workspace.store import Workspace

REPO = Path(__file__).resolve().parents[1]
OOD_DIR = REPO / "data" / "eval_ood"
GENERATOR_DIR = REPO / "mypt_lightning" / "generators"
FILES = {3: "phase3_chat_ood.jsonl", 4: "phase4_multiturn_ood.jsonl", 5: "phase5_toolcall_ood.jsonl",
         6: "phase6_agentic_ood.jsonl"}
EXPECT_KEYS = {"language", "turn_languages", "turn_cites", "tools", "first_tool", "answerable"}


def _records(phase: int) -> list[dict]:
    with open(OOD_DIR / FILES[phase], encoding="utf-8") as fh:
        return [parse_episode_line(line, where=f"{FILES[phase]}:{n}") for n, line in enumerate(fh, 1)]


def _user_messages() -> list[tuple[str, str]]:
    return [(r["_meta"]["id"], m["content"]) for phase in FILES for r in _records(phase)
            for m in r["messages"] if m["role"] == "user"]


def _turns(messages: list[dict]) -> list[list[dict]]:
    turns: list[list[dict]] = []
    for m in messages:
        if m["role"] == "user":
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


# ------------------------------------------------------------------------------ schema and references
@pytest.mark.parametrize("phase", list(FILES))
def test_ood_file_is_a_valid_bilingual_set_the_gate_reads(phase):
    records = _records(phase)  # every line parses and validates (docs/design.md section 1)
    assert 30 <= len(records) <= 60
    langs = [lang for r in records for lang in r["_meta"]["expect"]["turn_languages"]]
    assert langs.count("en") / len(langs) >= 0.4 and langs.count("de") / len(langs) >= 0.4
    ids = [r["_meta"]["id"] for r in records]
    assert len(set(ids)) == len(ids) and all(r["_meta"]["ood"] is True for r in records)
    read, skipped = read_episodes(OOD_DIR / FILES[phase])  # the phase >= 3 regression gate's reader
    assert len(read) == len(records) and skipped == []
    assert [p for p, _ in ood_files(OOD_DIR, 6)] == [3, 4, 5, 6]
    for r in records:
        serialize_episode(r)  # serializes under the wire protocol


@pytest.mark.parametrize("phase", list(FILES))
def test_expect_fields_match_the_reference_messages(phase):
    for r in _records(phase):
        expect, where = r["_meta"]["expect"], r["_meta"]["id"]
        assert EXPECT_KEYS <= set(expect), where
        turns = _turns(r["messages"])
        assert len(expect["turn_languages"]) == len(turns) == len(expect["turn_cites"]), where
        assert expect["language"] == r.get("language"), where
        if expect["language"] is None:  # a language switch: the record names no single language
            assert len(set(expect["turn_languages"])) == 2, where
        calls = [m["name"] for m in r["messages"] if m["role"] == "assistant_toolcall"]
        assert expect["tools"] == calls and expect["first_tool"] == (calls[0] if calls else None), where
        for turn, lang, cite in zip(turns, expect["turn_languages"], expect["turn_cites"]):
            assert same_language(turn[0]["content"], lang), (where, turn[0]["content"])
            final = turn[-1]
            assert final["role"] == "assistant" and same_language(final["content"], lang), (where, final)
            assert final.get("cite") == cite, where
        if phase == 4:
            assert 2 <= expect["turns"] == len(turns) <= 4, where
        else:
            assert len(turns) == 1, where
        if phase in (5, 6):
            assert all(m["role"] != "assistant" for m in r["messages"][1:-1]), where  # one answer, at the end


def test_phase_specific_properties():
    p3 = _records(3)
    assert sum(not r["_meta"]["expect"]["answerable"] for r in p3) >= 6  # questions the context cannot answer
    assert sum("context" not in r["messages"][0] for r in p3) >= 4  # plain chat without context
    p4 = _records(4)
    assert {r["_meta"]["category"] for r in p4} >= {"followup", "clarification", "topic_switch", "carryover",
                                                    "language_switch"}
    assert any(r["_meta"]["expect"]["turns"] == 3 for r in p4)
    for phase, chain in ((5, 1), (6, 2)):
        records = _records(phase)
        no_tool = [r for r in records if not r["_meta"]["expect"]["tools"]]
        assert 0.15 <= len(no_tool) / len(records) <= 0.3
        tools = [r["_meta"]["expect"]["tools"] for r in records if r["_meta"]["expect"]["tools"]]
        assert all(len(t) == chain for t in tools)
    assert {r["_meta"]["expect"]["first_tool"] for r in _records(5)} == {
        "workspace.search", "workspace.get_doc", "workspace.list_docs", "workspace.summarize", None}


@pytest.mark.parametrize("phase", [5, 6])
def test_tool_results_are_what_the_workspace_returns(phase):
    ws = Workspace()
    for r in _records(phase):
        msgs = r["messages"]
        for call, result in zip(msgs, msgs[1:]):
            if call["role"] == "assistant_toolcall":
                assert result["role"] == "toolresult" and result["name"] == call["name"]
                assert result["content"] == ws.call(call["name"], call["arguments"]), r["_meta"]["id"]


@pytest.mark.parametrize("phase", list(FILES))
def test_cited_answers_are_grounded_in_what_the_model_sees(phase):
    for r in _records(phase):
        seen = ""
        for m in r["messages"]:
            if m["role"] == "user":
                seen += m.get("context", "")
            elif m["role"] == "toolresult":
                seen += json.dumps(m["content"], ensure_ascii=False)
            elif m["role"] == "assistant" and m.get("cite"):
                assert m["cite"] in seen, (r["_meta"]["id"], m["cite"])  # the cited document was shown


# ------------------------------------------------------------------------------ no template matches
def _slot_parts(text: str) -> list[str | None] | None:
    """Literal pieces and None for each format slot, or None when ``text`` is no format string."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return [text]
    parts: list[str | None] = []
    for literal, name, _, _ in parsed:
        parts.append(literal)
        if name is not None:
            parts.append(None)
    return parts


def _regex(parts: list[str | None]) -> re.Pattern | None:
    literal = "".join(p for p in parts if p)
    if None in parts and sum(ch.isalpha() for ch in literal) < 4:
        # A bare slot ("{q}"), punctuation ("{a}-{b}") or a payload piece (f"the {p}"): no phrasing of
        # its own; the values that fill such slots are string literals and checked as such.
        return None
    body = "".join("(.+?)" if p is None else r"\s+".join(re.escape(w) for w in p.split(" ")) for p in parts)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=1)
def generator_templates() -> list[tuple[str, re.Pattern, bool]]:
    """Every string literal and f-string of the generator modules as a regex (slots match anything),
    plus the question bank's questions. The bool says whether the template is long enough to be
    searched for inside a message (a prefix/suffix combination), not only matched whole."""
    templates: dict[str, tuple[re.Pattern, bool]] = {}
    for path in sorted(GENERATOR_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        fragments = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else None for v in node.values]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in fragments:
                parts = _slot_parts(node.value)
            else:
                continue
            pattern = _regex(parts)
            if pattern is not None:
                literal = " ".join(p for p in parts if p).strip()
                templates[f"{path.stem}: {pattern.pattern}"] = (pattern, len(literal.split()) >= 4)
    for fact in load_facts(Workspace()):
        templates[f"questions.jsonl: {fact.question}"] = (_regex([fact.question]), False)
    return [(name, pattern, long) for name, (pattern, long) in templates.items()]


def _matches(message: str) -> list[str]:
    text = " ".join(message.split())
    variants = {text, text.rstrip("?.!")}  # format lock's no-punctuation style
    return [name for name, pattern, long in generator_templates()
            if any(pattern.fullmatch(v) for v in variants) or (long and pattern.search(text))]


def test_template_collection_catches_generated_prompts():
    assert len(generator_templates()) > 500
    caught = [
        "Kannst du in unseren Dokumenten nachsehen? Wie hoch ist die Homeoffice-Pauschale?",  # agent USER template
        "quick question: what is the capital of france? keep it short",  # format lock, lower style
        "Going back to \"Travel Expense Policy\": How much is the home office allowance?",  # multiturn carryover
        "Summarize pol-travel-en.",  # tool_episodes ask_summary
        "How many sides does a hexagon have?",  # general_qa item
        "What do I need to check first when the VPN does not work? Please check the docs.",  # agent suffix template
    ]
    for message in caught:
        assert _matches(message), message
    assert not _matches("Could you suggest a short, friendly subject line for an email?")


def test_no_generator_template_produces_an_ood_prompt():
    hits = {(where, msg): _matches(msg) for where, msg in _user_messages()}
    assert not {k: v for k, v in hits.items() if v}


def test_no_ood_prompt_equals_a_generated_one():
    """The same check on real output: every generator, several seeds, both languages."""
    ood = {normalize_loose(msg): where for where, msg in _user_messages()}
    generated = set()
    for seed in (1, 2, 3):
        sets = [format_lock.generate(300, seed).records, echo.generate(200, seed, gibberish="include").records,
                operators.generate(200, seed).train.records, rag_chat.generate(150, seed).records,
                multiturn.generate(100, seed).records, agent.generate(150, seed).records,
                tool_episodes.generate(150, seed).records]
        generated |= {normalize_loose(m["content"]) for records in sets for r in records for m in r["messages"]
                      if m["role"] == "user"}
    assert len(generated) > 2000
    assert not {text: where for text, where in ood.items() if text in generated}
