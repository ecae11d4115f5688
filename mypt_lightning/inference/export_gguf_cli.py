"""Export a MyPT checkpoint as a GGUF file for llama.cpp, with llama.cpp's own converter.

    python tools/export_gguf.py --checkpoint runs/phase6_agentic_rag/export --output mypt.gguf
    python tools/export_gguf.py --checkpoint CKPT --output mypt-f16.gguf --outtype f16 --verify 32

CKPT is anything mypt_lightning.weights.checkpoint.load_model reads (Lightning .ckpt, exported
folder, legacy MyPT folder, transformers Llama folder). It is exported to a temporary
transformers folder (tools/export_hf.py: weights, tokenizer, chat template, generation
config) and converted by llama.cpp's convert_hf_to_gguf.py. The converter comes from
--llama_cpp PATH (a llama.cpp checkout, or a llama-cpp-python sdist .tar.gz), else
$MYPT_LLAMA_CPP, else it is extracted once from the llama-cpp-python sdist
(pip download, no build) into ~/.cache/mypt_lightning/llama.cpp/. It needs torch, numpy,
transformers, gguf and sentencepiece in this Python.

--verify N loads the GGUF with llama-cpp-python and compares N greedy tokens on a few
protocol prompts with mypt-lightning's own generation (the padding rows excluded in both).

A legacy checkpoint with a nonzero lm_head bias is refused unless --drop_lm_head_bias is
given (the logit shift and top-1/top-5 agreement are printed). The .gguf appears whole or
not at all. Exit status: 0 written, 1 --verify found differing tokens, 2 refused or bad
input (one line on stderr). See docs/serving.md.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mypt_lightning.errors import UserError, run_cli

# The command line of tools/export_gguf.py (the docstring above is its --help). It lives in inference,
# not weights, because --verify compares with our own generation (weights sits below inference).
OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # mypt_lightning.weights.gguf_export.OUTTYPES, kept here for a fast --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_gguf.py", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="any checkpoint load_model reads")
    parser.add_argument("--output", required=True, metavar="FILE.gguf", help="the GGUF file to write")
    parser.add_argument("--outtype", default="f32", choices=OUTTYPES,
                        help="tensor type: f32 (exact, default), f16, bf16 or q8_0 (smaller, approximate)")
    parser.add_argument("--drop_lm_head_bias", action="store_true",
                        help="export a legacy checkpoint by dropping its lm_head bias (changes the logits)")
    parser.add_argument("--llama_cpp", metavar="PATH", default=None,
                        help="llama.cpp checkout, folder with convert_hf_to_gguf.py, or llama-cpp-python sdist")
    parser.add_argument("--no_download", action="store_true",
                        help="never pip-download the llama-cpp-python sdist for the converter")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="compare N greedy tokens of llama-cpp-python and ours on a few prompts")
    return parser


PROMPT_NAMES = ("EN chat", "DE chat", "RAG", "tool call")  # PROBE_EPISODES, first user turn each


def verify(checkpoint: str, gguf: Path, n: int) -> tuple[int, int, list[str]]:
    """(equal prompts, prompts, one line per prompt) of llama.cpp's greedy tokens vs ours."""
    import torch

    from mypt_lightning.inference.generation import SamplingConfig, generate
    from mypt_lightning.weights.checkpoint import load_model
    from mypt_lightning.weights.gguf_export import compare_greedy
    from mypt_lightning.weights.hf_export import PROBE_EPISODES
    from mypt_lightning.tokens.protocol import build_prompt

    model = load_model(checkpoint).eval()
    if model.config.lm_head_bias:  # compare with what was exported: the model without its bias
        with torch.no_grad():
            model.lm_head.bias.zero_()
    prompts = [build_prompt({**e, "messages": e["messages"][:1]}) for e in PROBE_EPISODES]
    ours = [generate(model, p, SamplingConfig(max_new_tokens=n, stop_ids=frozenset())).tokens for p in prompts]
    results = compare_greedy(model, gguf, prompts, ours)
    lines = [f"prompt {i} ({name}, {len(p)} tokens): {r.describe()}"
             for i, (name, p, r) in enumerate(zip(PROMPT_NAMES, prompts, results, strict=True))]
    return sum(r.identical for r in results), len(results), lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _export(args), "export_gguf")


def _export(args: argparse.Namespace) -> int:
    from mypt_lightning.weights.gguf_export import export_gguf

    if args.verify > 0 and importlib.util.find_spec("llama_cpp") is None:  # before the slow conversion
        raise UserError("--verify needs llama-cpp-python (pip install llama-cpp-python)")

    shift = export_gguf(args.checkpoint, args.output, outtype=args.outtype,
                        drop_lm_head_bias=args.drop_lm_head_bias, llama_cpp=args.llama_cpp,
                        allow_download=not args.no_download)
    if shift is not None:
        print(f"dropped the lm_head bias: logits move by max |diff| {shift.max_abs:.6g}, mean |diff| "
              f"{shift.mean_abs:.6g}; on {shift.positions} probe positions the top-1 token is unchanged at "
              f"{shift.top1_agreement:.1%} and {shift.top5_overlap:.1%} of the top-5 set is kept")
    print(f"exported {args.checkpoint} -> {args.output} (GGUF {args.outtype}, llama.cpp convert_hf_to_gguf.py)")
    if args.verify > 0:
        same, total, lines = verify(args.checkpoint, Path(args.output), args.verify)
        print("\n".join(lines))
        print(f"llama.cpp greedy == mypt-lightning greedy on {same}/{total} prompts ({args.verify} tokens each)")
        return 0 if same == total else 1
    return 0
