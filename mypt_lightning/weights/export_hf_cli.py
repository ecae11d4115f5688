"""Export a MyPT checkpoint as a transformers LlamaForCausalLM folder.

    python tools/export_hf.py --checkpoint CKPT --output_dir DIR [--drop_lm_head_bias]

CKPT is any format mypt_lightning.weights.checkpoint.load_model reads: a Lightning .ckpt file,
an exported folder (model.safetensors + config.json) or a legacy MyPT folder
(model.pt + config.json). DIR then loads with
``transformers.LlamaForCausalLM.from_pretrained(DIR)`` (safetensors weights, q/k/v split,
linear RoPE scaling with factor = rope_scale, tied embeddings, rms_norm_eps from the model).
DIR is written next to itself and renamed into place; an existing previous export
(or an empty folder) is replaced, anything else is refused.

DIR also holds the tokenizer (tokenizer.json, tokenizer_config.json with the MyPT chat
template, special_tokens_map.json), generation_config.json (greedy, stops at
</myPT_assistant>, <myPT_eot>, <|endoftext|>) and a README.md model card quoting the
gate_report.json found beside the checkpoint's run (or --gate_report). docs/serving.md
says how to use it with transformers, vLLM and llama.cpp.

Llama has no lm_head bias. A checkpoint with a nonzero lm_head bias is refused unless
--drop_lm_head_bias is given; then the logit shift on the positions of a few protocol
conversations is printed: max and mean absolute difference, how often the top-1 token
is unchanged and how much of the top-5 set is kept.

Exit status: 0 exported, 2 refused or bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse

from mypt_lightning.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="Lightning .ckpt file, exported folder, or legacy MyPT folder")
    parser.add_argument("--output_dir", required=True, metavar="DIR", help="folder to write the transformers model to")
    parser.add_argument("--drop_lm_head_bias", action="store_true",
                        help="export a checkpoint whose lm_head has a nonzero bias by dropping the bias "
                             "(changes the logits; the shift is printed)")
    parser.add_argument("--gate_report", metavar="JSON", default=None,
                        help="gate report to quote in the model card (default: gate_report.json of the run)")
    args = parser.parse_args(argv)

    return run_cli(lambda: _export(args), "export_hf")


def _export(args: argparse.Namespace) -> int:
    from mypt_lightning.weights.hf_export import export_hf  # imports torch/transformers: after --help

    shift = export_hf(args.checkpoint, args.output_dir, drop_lm_head_bias=args.drop_lm_head_bias,
                      gate_report=args.gate_report)
    if shift is not None:
        print(f"dropped the lm_head bias: logits move by max |diff| {shift.max_abs:.6g}, "
              f"mean |diff| {shift.mean_abs:.6g}; on {shift.positions} probe positions the top-1 token is "
              f"unchanged at {shift.top1_agreement:.1%} and {shift.top5_overlap:.1%} of the top-5 set is kept")
    print(f"exported {args.checkpoint} -> {args.output_dir} (transformers LlamaForCausalLM)")
    return 0
