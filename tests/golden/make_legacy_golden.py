#!/usr/bin/env python
"""Produce the literal expectations of tests/test_legacy_protocol.py by running the ORIGINAL
MyPT scripts (chberclaz/MyPT: scripts/sft/prepare_chat_sft.py, prepare_tool_sft.py).

    git -C /work/.mirror/chberclaz+MyPT/repo archive HEAD | tar -x -C /tmp/mypt_orig
    python tests/golden/make_legacy_golden.py /tmp/mypt_orig > /tmp/golden.py

The original calls ``tiktoken.get_encoding("gpt2")``, which needs the network; gpt2 and
r50k_base are the same BPE (same ranks, same pattern), so ``get_encoding`` is redirected to
our installed r50k_base file. Each run writes an unpacked dataset (``--val_split 0``, input
order) or a packed one without shuffling (the chat script only applies ``--weighted_mask``
when packing); the episodes are read back from the binary files and printed as a Python
dict ``{run name: [(ids, weights), ...]}``, one entry per input record.
The test itself never needs the original code.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHAT = HERE / "legacy_episodes.jsonl"
TOOL = HERE / "legacy_tool_episodes.jsonl"

# run name -> (script, input, extra flags)
RUNS = {
    "chat_default": ("prepare_chat_sft.py", CHAT, []),
    "chat_system_prompt": ("prepare_chat_sft.py", CHAT, ["--system_prompt", "Be brief."]),
    "chat_no_system": ("prepare_chat_sft.py", CHAT, ["--no_system_prompt"]),
    "chat_rag": ("prepare_chat_sft.py", CHAT, ["--enable_rag_tags"]),
    "chat_rag_weighted_packed": ("prepare_chat_sft.py", CHAT,
                                 ["--enable_rag_tags", "--weighted_mask", "--enable_packing",
                                  "--pack_block_size", "512", "--no_pack_shuffle"]),
    "tool_default": ("prepare_tool_sft.py", TOOL, []),
    "tool_weighted": ("prepare_tool_sft.py", TOOL, ["--weighted_mask"]),
}


def _patch_tiktoken() -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    from mypt_lightning.tokens import tokenizer_assets

    tokenizer_assets.ensure_tiktoken_env()
    import tiktoken

    real = tiktoken.get_encoding
    tiktoken.get_encoding = lambda name: real("r50k_base" if name == "gpt2" else name)


def _read(out: Path) -> list[tuple[list[int], list[float]]]:
    split = out / "train"
    tokens = np.fromfile(split / "tokens.bin", np.uint32)
    weighted = split / "mask_weighted.bin"
    weights = (np.fromfile(weighted, np.float32) if weighted.exists()
               else np.fromfile(split / "mask.bin", np.uint8).astype(np.float32))
    index = np.fromfile(split / "episodes.idx", np.uint64).reshape(-1, 2)
    episodes = []
    segments_file = split / "segment_ids.bin"
    segments = np.fromfile(segments_file, np.uint8) if segments_file.exists() else None
    for start, length in index.tolist():
        t, w = tokens[start:start + length], weights[start:start + length]
        if segments is None:
            episodes.append((t.tolist(), w.tolist()))
            continue
        s = segments[start:start + length]
        for k in range(1, int(s.max()) + 1):
            episodes.append((t[s == k].tolist(), w[s == k].tolist()))
    return episodes


def main(original: str) -> None:
    root = Path(original).resolve()
    _patch_tiktoken()
    sys.path.insert(0, str(root))
    os.chdir(root)
    results = {}
    for name, (script, source, flags) in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ds"
            sys.argv = [script, "--input", str(source), "--output_dir", str(out), "--val_split", "0", *flags]
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(str(root / "scripts" / "sft" / script), run_name="__main__")
            results[name] = _read(out)
    print("GOLDEN = {")
    for name, episodes in results.items():
        print(f"    {name!r}: [")
        for ids, ws in episodes:
            print(f"        ({ids!r},\n         {[float(w) for w in ws]!r}),")
        print("    ],")
    print("}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mypt_orig")
