#!/usr/bin/env python
"""Produce the literal expectations of tests/test_legacy_cli.py (and CONTROLLER_PROMPT /
EVAL_SUITE_PROMPT in tests/test_legacy_protocol.py) by running the ORIGINAL MyPT code on a
tiny legacy checkpoint folder.

    git --git-dir=/work/.mirror/chberclaz+MyPT/repo archive HEAD | tar -x -C /tmp/mypt_orig
    PYTHONPATH=. python tests/golden/make_legacy_cli_golden.py /tmp/mypt_orig

The folder is the one the test writes (tests/test_legacy_cli.py: legacy_cli_checkpoint, the
layout of the original's save_checkpoint_bundle). The original loads it with its own
``GPT.load``; prompts are built by its own code (scripts/eval/sft_eval_suite.py make_prompt,
core/agent/controller.py AgentController.build_prompt with its default agentic prompt) and
encoded by its tokenizer; greedy outputs come from its ``GPT.generate`` (temperature 0, its
default stops </myPT_assistant> and <myPT_eot>). ``tiktoken.get_encoding("gpt2")`` is
redirected to the installed r50k_base (same ranks). Prints Python literals.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N_NEW = 8
QUESTION = "What is the capital of France?"
TOOL_QUESTION = "Find the intro doc"


def main(original: str) -> None:
    sys.path.insert(0, str(ROOT))
    from mypt_lightning.tokens import tokenizer_assets

    tokenizer_assets.ensure_tiktoken_env()
    import tiktoken

    real = tiktoken.get_encoding
    tiktoken.get_encoding = lambda name: real("r50k_base" if name == "gpt2" else name)
    from tests.test_legacy_cli import legacy_cli_checkpoint

    sys.path.insert(0, str(Path(original).resolve()))
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        folder = legacy_cli_checkpoint(Path(tmp) / "legacy")
        from core.agent.controller import AgentController
        from core.model import GPT

        spec = importlib.util.spec_from_file_location("suite", Path(original) / "scripts/eval/sft_eval_suite.py")
        suite = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(suite)
        model = GPT.load(str(folder), map_location="cpu")[0].eval()
    seen = {}
    decode = model.decode

    def spy(ids):
        seen["ids"] = list(ids)
        return decode(ids)

    model.decode = spy

    def greedy(prompt: str) -> list[int]:
        with contextlib.redirect_stdout(io.StringIO()):
            model.generate(prompt, N_NEW, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
        return seen["ids"][len(model.encode(prompt)):]  # its out_ids start with the prompt

    chat_prompt = suite.make_prompt(QUESTION)
    tool_prompt = AgentController(model, tools=None).build_prompt([{"role": "user", "content": TOOL_QUESTION}])
    print(f"EVAL_SUITE_PROMPT = {model.encode(chat_prompt)!r}")
    print(f"CONTROLLER_PROMPT = {model.encode(tool_prompt)!r}")
    print(f"CHAT_OUTPUT = {greedy(chat_prompt)!r}")
    print(f"TOOL_OUTPUT = {greedy(tool_prompt)!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mypt_orig")
