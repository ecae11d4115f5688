"""The inference CLIs with --protocol on a legacy MyPT checkpoint folder, as a MyPT user runs them.

The folder has the original's layout (save_checkpoint_bundle: model.pt {"state_dict", ...},
config.json = asdict(GPTConfig), tokenizer.json, training_state.json). The literals below are
what the ORIGINAL code builds and generates on this very folder (tests/golden/make_legacy_cli_golden.py
runs it): sft_eval_suite.py's chat prompt, the agent controller's prompt with its default
agentic prompt, and its greedy GPT.generate output. Each CLI runs in-process (its main(argv));
a spy on generation.generate records the prompt ids each model call got.
"""

from __future__ import annotations

import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from mypt_lightning.inference import generation
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, ASSISTANT_OPEN, EOT, USER_CLOSE, USER_OPEN
from mypt_lightning.tokens.tokenizer import get_tokenizer
from tests.test_legacy_compat import legacy_config, legacy_state_dict, write_folder

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"
TOOL_QUESTION = "Find the intro doc"

# tests/golden/make_legacy_cli_golden.py on legacy_cli_checkpoint()
EVAL_SUITE_PROMPT = [50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 2061, 318, 262, 3139, 286, 4881, 30, 50260, 50261]
CONTROLLER_PROMPT = [50257, 1639, 389, 2011, 11571, 13, 23998, 2683, 1262, 44573, 4899, 618, 2622, 13, 198, 198, 33637, 25, 198, 12, 44573, 13, 12947, 7, 22766, 11, 1353, 62, 74, 28, 20, 8, 532, 1064, 5981, 4963, 198, 12, 44573, 13, 4868, 62, 31628, 3419, 532, 1351, 477, 4963, 220, 220, 198, 12, 44573, 13, 1136, 62, 15390, 7, 15390, 62, 312, 393, 3670, 8, 532, 651, 3188, 2420, 198, 12, 44573, 13, 16345, 3876, 1096, 7, 15390, 62, 312, 393, 2420, 8, 532, 35743, 2695, 198, 198, 26227, 25, 220, 50267, 4895, 3672, 1298, 366, 5225, 10223, 13, 12947, 1600, 366, 22766, 1298, 366, 9313, 92, 50268, 50258, 198, 50259, 16742, 262, 18951, 2205, 50260, 198, 50261]
CHAT_OUTPUT = [12371, 23310, 1263, 12686, 660, 8101, 8378, 38307]
TOOL_OUTPUT = [27321, 7701, 22328, 25106, 4057, 42463, 36709, 26279]


def legacy_cli_checkpoint(path: Path) -> Path:
    """A tiny legacy MyPT checkpoint folder (block_size 256: room for the agentic prompt)."""
    cfg = legacy_config(block_size=256)
    return write_folder(path, cfg, legacy_state_dict(cfg, seed=3))


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory) -> Path:
    return legacy_cli_checkpoint(tmp_path_factory.mktemp("legacy") / "mypt_model")


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory) -> Path:
    """The same folder with <myPT_eot> favoured by the head bias: every generation stops at once
    (a whole gate in a second)."""
    cfg = legacy_config(block_size=256)
    sd = legacy_state_dict(cfg, seed=3)
    sd["lm_head.bias"][EOT] += 100.0
    return write_folder(tmp_path_factory.mktemp("legacy") / "mypt_quick", cfg, sd)


@pytest.fixture
def prompts(monkeypatch) -> list[list[int]]:
    """The prompt ids of every generation call (the spy on generation.generate)."""
    seen: list[list[int]] = []
    real = generation.generate

    def spy(model, prompt_ids, config=None, **kw):
        seen.append([int(t) for t in prompt_ids])
        return real(model, prompt_ids, config, **kw)

    monkeypatch.setattr(generation, "generate", spy)
    return seen


def _tool(name: str, argv: list[str], monkeypatch, stdin: str | None = None) -> int:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    module = runpy.run_path(str(ROOT / "tools" / f"{name}.py"), run_name="not_main")
    return module["main"](argv)


def test_generate_mypt_chat_sends_the_eval_suite_prompt_and_decodes_like_the_original(legacy_dir, prompts, monkeypatch, capsys):
    rc = _tool("generate", ["--model", str(legacy_dir), "--protocol", "mypt_chat", "--user", QUESTION,
                            "--max_new_tokens", "8", "--no_stream"], monkeypatch)
    assert rc == 0 and prompts == [EVAL_SUITE_PROMPT]
    want = get_tokenizer().decode([t for t in CHAT_OUTPUT if t not in (ASSISTANT_CLOSE, EOT)])
    assert capsys.readouterr().out.strip() == want.strip()


def test_generate_mypt_tool_sends_the_controller_prompt(legacy_dir, prompts, monkeypatch, capsys):
    rc = _tool("generate", ["--model", str(legacy_dir), "--protocol", "mypt_tool", "--user", TOOL_QUESTION,
                            "--max_new_tokens", "8", "--no_stream"], monkeypatch)
    assert rc == 0 and prompts == [CONTROLLER_PROMPT]
    want = get_tokenizer().decode([t for t in TOOL_OUTPUT if t not in (ASSISTANT_CLOSE, EOT)])
    assert capsys.readouterr().out.strip() == want.strip()


def test_chat_mypt_chat_two_turns_from_stdin(legacy_dir, prompts, monkeypatch, capsys):
    rc = _tool("chat", ["--model", str(legacy_dir), "--protocol", "mypt_chat", "--temperature", "0",
                        "--max_new_tokens", "4"], monkeypatch, stdin=f"{QUESTION}\nAnd Germany?\n/exit\n")
    assert rc == 0 and len(prompts) == 2
    assert prompts[0] == EVAL_SUITE_PROMPT
    # turn 2: the chat SFT prefix of the conversation so far (no <myPT_eot> between turns)
    second = prompts[1]
    assert second[:len(EVAL_SUITE_PROMPT)] == EVAL_SUITE_PROMPT and EOT not in second
    tail = [USER_OPEN, *get_tokenizer().encode_text("And Germany?"), USER_CLOSE, ASSISTANT_OPEN]
    assert second[-len(tail):] == tail and second[-len(tail) - 1] == ASSISTANT_CLOSE


@pytest.mark.parametrize("protocol", ["mypt_chat", "mypt_tool"])
def test_eval_gates_phase1_under_a_legacy_protocol(protocol, quick_dir, prompts, tmp_path, capsys):
    from mypt_lightning.gates.base import subsample
    from mypt_lightning.gates.phase1 import GATE
    from mypt_lightning.tokens.protocol_profiles import get_profile

    report = tmp_path / "r.json"
    from mypt_lightning.gates.cli import main  # what tools/eval_gates.py runs

    rc = main(["--model", str(quick_dir), "--phase", "1", "--protocol", protocol, "--report", str(report),
               "--max_cases", "4", "--batch_size", "1"])
    assert rc == 1  # a model that answers nothing fails the gate: exit 1 (not 2: no input error)
    profile = get_profile(protocol)
    cases = subsample(GATE.cases(), 4)
    assert prompts == [profile.build_prompt(c.messages, profile.default_system()) for c in cases]
    head = EVAL_SUITE_PROMPT if protocol == "mypt_chat" else CONTROLLER_PROMPT
    n = head.index(USER_OPEN) + 1  # the original's system block (and separator) and the user opener
    assert all(p[:n] == head[:n] for p in prompts)
    data = json.loads(report.read_text())
    assert [c["prompt"] for c in data["gates"][0]["cases"]] == [get_tokenizer().decode(p) for p in prompts]


def test_generate_script_exit_code_as_a_user_runs_it(legacy_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "generate.py"), "--model", str(legacy_dir),
                           "--protocol", "mypt_tool", "--user", TOOL_QUESTION, "--max_new_tokens", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"prompt {len(CONTROLLER_PROMPT)} tokens" in proc.stderr
