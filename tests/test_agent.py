"""The agent loop: real tool execution, transcripts equal to the protocol, errors the model can
recover from (malformed JSON, unknown tool, repeated calls), bounded loops, chat (library and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mypt_lightning.inference.agent import AgentSession, ChatRenderer, _shrink, chat_loop
from mypt_lightning.inference.generation import ModelPolicy, SamplingConfig, TextPolicy
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.tokens.protocol import serialize_episode, toolresult_text
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, EOT
from mypt_lightning.tokens.tokenizer import get_tokenizer
from mypt_lightning.workspace.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are MyPT. Use the workspace tools."
SEARCH = '<myPT_think>I will search.</myPT_think><myPT_toolcall>{"name": "workspace.search", "query": "hotel costs"}</myPT_toolcall></myPT_assistant>'
ANSWER = ("Hotel costs are reimbursed up to 150 euros per night.<myPT_cite>pol-travel-en</myPT_cite>"
          "</myPT_assistant><myPT_eot>")


@pytest.fixture(scope="module")
def workspace():
    return Workspace()


def session(replies, workspace=None, **kw) -> tuple[AgentSession, TextPolicy]:
    policy = TextPolicy(replies)
    return AgentSession(policy, workspace, SYSTEM, **kw), policy


def transcript_of(s: AgentSession) -> list[int]:
    return serialize_episode({"system": SYSTEM, "messages": s.messages})[0]


def test_tool_call_is_executed_and_the_transcript_is_the_protocol(workspace):
    s, policy = session([SEARCH, ANSWER], workspace)
    turn = s.ask("How much does a hotel night cost?")
    assert turn.completed and turn.clean_end
    assert turn.answer == "Hotel costs are reimbursed up to 150 euros per night."
    assert turn.cite == "pol-travel-en"
    [step] = turn.steps
    assert (step.name, step.arguments, step.think, step.error) == ("workspace.search", {"query": "hotel costs"},
                                                                   "I will search.", None)
    assert step.result == workspace.call("workspace.search", {"query": "hotel costs"})  # the real engine's answer
    assert toolresult_text(step.result) in policy.calls[1]  # the model saw the result
    assert s.well_formed and s.tokens == transcript_of(s)
    assert [m["role"] for m in s.messages] == ["user", "assistant_toolcall", "toolresult", "assistant"]


def test_multi_turn_transcript_has_eot_after_every_turn(workspace):
    s, _ = session([SEARCH, ANSWER, "Gern geschehen!</myPT_assistant><myPT_eot>"], workspace)
    s.ask("How much does a hotel night cost?")
    turn = s.ask("Danke!")
    assert turn.answer == "Gern geschehen!"
    assert s.tokens == transcript_of(s)
    assert s.tokens.count(EOT) == 2 and s.tokens[-2:] == [ASSISTANT_CLOSE, EOT]
    s.reset()
    assert s.tokens == [] and s.messages == []


def test_malformed_json_becomes_an_error_result_and_the_model_recovers(workspace):
    bad = '<myPT_toolcall>{"name": "workspace.search", "query": </myPT_toolcall>'
    s, policy = session([bad, SEARCH, ANSWER], workspace)
    turn = s.ask("Hotel?")
    assert turn.completed and turn.answer.startswith("Hotel costs")
    assert [st.error for st in turn.steps] == ["invalid_json", None]
    assert turn.steps[0].result["error"] == "invalid toolcall JSON"
    assert '"error": "invalid toolcall JSON"' in policy.calls[1]
    assert not s.well_formed  # the garbage stays in the transcript, as generated


@pytest.mark.parametrize("call, error", [
    ('{"name": "workspace.delete", "doc_id": "x"}', "unknown_tool"),
    ('{"name": "workspace.search"}', "bad_arguments"),
    ('{"name": "workspace.get_doc", "doc_id": "no-such-doc"}', "tool_error"),
    ('["workspace.search"]', "invalid_json"),
    ('{"query": "no name"}', "invalid_json"),
])
def test_tool_errors_are_results_not_exceptions(workspace, call, error):
    s, policy = session([f"<myPT_toolcall>{call}</myPT_toolcall>", "Sorry.</myPT_assistant><myPT_eot>"], workspace)
    turn = s.ask("Do something.")
    assert turn.completed and turn.answer == "Sorry."
    assert turn.steps[0].error == error and "error" in turn.steps[0].result
    assert "<myPT_toolresult>{" in policy.calls[1]


def test_repeated_identical_calls_end_the_turn(workspace):
    s, policy = session(SEARCH, workspace, max_steps=10, max_repeated_calls=2)
    turn = s.ask("Hotel?")
    assert turn.stop_reason == "loop" and not turn.completed and turn.fallback
    assert [st.error for st in turn.steps] == [None, "repeated_call", "repeated_call"]
    assert len(policy.calls) == 3
    assert s.tokens[-2:] == [ASSISTANT_CLOSE, EOT]  # the conversation can go on
    assert s.ask.__self__ is s


def test_max_steps_bounds_the_loop(workspace):
    calls = [f'<myPT_toolcall>{{"name": "workspace.search", "query": "q{i}"}}</myPT_toolcall>' for i in range(20)]
    s, policy = session(calls, workspace, max_steps=4)
    turn = s.ask("Keep searching.")
    assert turn.stop_reason == "max_steps" and len(turn.steps) == 4 and len(policy.calls) == 4
    assert s.tokens[-2:] == [ASSISTANT_CLOSE, EOT]


def test_runaway_answer_is_cut_and_closed():
    s, _ = session(["blah " * 200, "Ok.</myPT_assistant><myPT_eot>"], max_new_tokens=16)
    turn = s.ask("Talk.")
    assert turn.stop_reason == "max_new_tokens" and not turn.clean_end
    assert s.tokens[-2:] == [ASSISTANT_CLOSE, EOT]
    assert s.ask("Again.").completed


def test_tools_disabled_without_a_workspace():
    s, policy = session([SEARCH, "I can't look that up.</myPT_assistant><myPT_eot>"])
    turn = s.ask("Hotel?")
    assert turn.steps[0].error == "tools_disabled" and turn.completed


def test_context_full_ends_the_turn():
    s, _ = session(["x " * 100], context_size=40, max_new_tokens=200)
    turn = s.ask("Hi")
    assert turn.stop_reason == "context_full"


def test_long_tool_results_are_shrunk_to_valid_json():
    result = {"doc_id": "a", "text": "word " * 5000, "documents": [{"snippet": "s" * 3000}]}
    small = _shrink(result, 2000)
    text = toolresult_text(small)
    assert len(text) <= 2000 and json.loads(text)["truncated"] is True and small["doc_id"] == "a"


def test_agent_loop_runs_a_real_model(workspace):
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(block_size=512)).eval()
    s = AgentSession(ModelPolicy(model, SamplingConfig(temperature=1.0, seed=0)), workspace, SYSTEM, max_steps=2,
                     max_new_tokens=20)
    for _ in range(2):
        turn = s.ask("Search the workspace for hotel costs.")
        assert turn.stop_reason in ("answer", "max_new_tokens", "max_steps", "loop")
    assert s.tokens[-2:] == [ASSISTANT_CLOSE, EOT]


# ----------------------------------------------------------------------------- chat


def test_chat_renderer_hides_think_unless_asked():
    tok = get_tokenizer()
    from mypt_lightning.inference.generation import encode_with_tags

    ids = encode_with_tags("<myPT_think>secret</myPT_think>Grüße!<myPT_cite>doc-1</myPT_cite></myPT_assistant><myPT_eot>")
    for show, expected in ((False, "Grüße! [source: doc-1]"), (True, "[think: secret]\nGrüße! [source: doc-1]")):
        out = []
        r = ChatRenderer(out.append, show_think=show, tokenizer=tok)
        for t in ids:
            r.push(t)
        r.end()
        assert "".join(out) == expected


def test_chat_loop_with_scripted_input(workspace):
    s, _ = session([SEARCH, ANSWER, "<myPT_think>hmm</myPT_think>Hallo!</myPT_assistant><myPT_eot>"], workspace)
    lines = iter(["How much is a hotel?", "", "/reset", "Hallo", "/exit", "never read"])
    out = []
    turns = chat_loop(s, lambda prompt: next(lines), out.append)
    text = "".join(out)
    assert turns == 2
    assert "[tool call] " in text and "[tool result] {\"documents\"" in text
    assert "150 euros per night. [source: pol-travel-en]" in text
    assert "[new conversation]" in text and "Hallo!" in text and "hmm" not in text


def run_chat(args, stdin, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "chat.py"), *map(str, args)], input=stdin,
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_chat_cli_driven_by_stdin(tiny_export):
    r = run_chat(["--model", tiny_export, "--temperature", 0, "--max_new_tokens", 6], "Hello\nWie geht's?\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("mypt> ") == 2
    r = run_chat(["--model", tiny_export, "--agent", "--workspace", ROOT / "workspace", "--max_steps", 2,
                  "--max_new_tokens", 6, "--seed", 1], "Find hotel costs\n")  # ends at EOF
    assert r.returncode == 0, r.stderr
    assert "agent, workspace" in r.stderr and "mypt> " in r.stdout
    r = run_chat(["--model", tiny_export, "--agent", "--workspace", ROOT / "no-such-dir"], "")
    assert r.returncode == 2 and "Traceback" not in r.stderr
