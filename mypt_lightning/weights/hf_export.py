"""Export MyPT weights as a transformers ``LlamaForCausalLM`` folder.

Name mapping (ours -> transformers; see the state-dict table in ``model.py``)::

    embed.weight                 -> model.embed_tokens.weight
    blocks.N.attn_norm.weight    -> model.layers.N.input_layernorm.weight
    blocks.N.attn.qkv.weight     -> model.layers.N.self_attn.{q,k,v}_proj.weight   (rows split in 3)
    blocks.N.attn.proj.weight    -> model.layers.N.self_attn.o_proj.weight
    blocks.N.mlp_norm.weight     -> model.layers.N.post_attention_layernorm.weight
    blocks.N.mlp.w_gate|w_up|w_down -> model.layers.N.mlp.gate_proj|up_proj|down_proj
    norm_f.weight                -> model.norm.weight
    lm_head.weight               -> lm_head.weight (omitted when tied: tie_word_embeddings=True)

Both use the split-half ("rotate_half") RoPE layout, so q/k rows need no permutation.
RoPE scaling: rope_scale s != 1 becomes linear scaling with factor s
(``rope_parameters={"rope_type": "linear", "factor": s, "rope_theta": theta}`` for
transformers >= 5, plus the older ``rope_scaling``/``rope_theta`` keys for 4.x readers).

Llama has no lm_head bias. A legacy checkpoint's nonzero bias is refused unless the
caller drops it explicitly; then ``logit_shift`` says how far the logits move and how often
the top-1 token and the top-5 set survive, on the positions of a few protocol conversations.

Besides the weights and config.json, every export holds what serving needs
(hf_tokenizer.py, hf_chat_template.py, hf_model_card.py)::

    tokenizer.json, tokenizer_config.json (chat_template), special_tokens_map.json
    generation_config.json   stops at </myPT_assistant>, <myPT_eot>, <|endoftext|>; pad 50256
    README.md                model card: architecture, phase, data, gate results, how to serve
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mypt_lightning.weights.checkpoint import CheckpointError, atomic_output_dir, load_model
from mypt_lightning.model import MyPT
from mypt_lightning.tokens.special_tokens import EOT, PAD_ID

HF_WEIGHTS_FILE = "model.safetensors"


class ExportRefusedError(CheckpointError):
    """The model cannot be represented exactly in the target format."""


@dataclass
class LogitShift:
    max_abs: float
    mean_abs: float
    top1_agreement: float  # fraction of probe positions whose argmax token is unchanged
    top5_overlap: float = 1.0  # mean share of the top-5 tokens kept, over the probe positions
    positions: int = 0  # how many probe positions were compared


def hf_config_dict(model: MyPT) -> dict:
    """Keyword arguments for ``transformers.LlamaConfig`` describing ``model``."""
    c = model.config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scale != 1.0:
        rope = {"rope_type": "linear", "factor": float(c.rope_scale), "rope_theta": c.rope_theta}
    return dict(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.hidden_dim,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_head,
        head_dim=c.head_dim, hidden_act="silu", max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_weights, rope_parameters=rope,
        attention_bias=c.bias, mlp_bias=False, attention_dropout=0.0,
        bos_token_id=None, eos_token_id=EOT, pad_token_id=PAD_ID,
    )


def to_hf_state_dict(model: MyPT) -> dict[str, torch.Tensor]:
    """Our weights under transformers Llama names (a tied head omitted; lm_head.bias never included)."""
    c, sd = model.config, model.state_dict()
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm_f.weight"]}
    if not c.tie_weights:
        out["lm_head.weight"] = sd["lm_head.weight"]
    params = ("weight", "bias") if c.bias else ("weight",)
    for i in range(c.n_layer):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        out[hf + "input_layernorm.weight"] = sd[ours + "attn_norm.weight"]
        out[hf + "post_attention_layernorm.weight"] = sd[ours + "mlp_norm.weight"]
        for p in params:
            q, k, v = sd[f"{ours}attn.qkv.{p}"].chunk(3, dim=0)
            out[f"{hf}self_attn.q_proj.{p}"], out[f"{hf}self_attn.k_proj.{p}"] = q, k
            out[f"{hf}self_attn.v_proj.{p}"] = v
            out[f"{hf}self_attn.o_proj.{p}"] = sd[f"{ours}attn.proj.{p}"]
        for mine, theirs in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")):
            out[f"{hf}mlp.{theirs}.weight"] = sd[f"{ours}mlp.{mine}.weight"]  # the MLP has no biases
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


# Conversations whose positions probe the shift: what a MyPT model is asked in practice
# (EN and DE chat, RAG with think/cite, a tool call), not random ids.
PROBE_EPISODES = (
    {"system": "You are MyPT, a helpful assistant.", "messages": [
        {"role": "user", "content": "What is the capital of France, and why is it famous?"},
        {"role": "assistant", "content": "The capital of France is Paris. It is famous for the Eiffel Tower, "
                                         "the Louvre and its cafes."},
        {"role": "user", "content": "Name one river there."},
        {"role": "assistant", "content": "The Seine flows through Paris."}]},
    {"system": "Du bist MyPT. Antworte auf Deutsch.", "messages": [
        {"role": "user", "content": "Wie viele Tage hat eine Woche?"},
        {"role": "assistant", "content": "Eine Woche hat sieben Tage, von Montag bis Sonntag."}]},
    {"messages": [
        {"role": "user", "content": "When did the bridge open?",
         "context": "[1] The Golden Gate Bridge opened to traffic on May 28, 1937."},
        {"role": "assistant", "content": "It opened on May 28, 1937.", "think": "Document 1 gives the date.",
         "cite": "[1]"}]},
    {"messages": [
        {"role": "user", "content": "Search my notes for the budget."},
        {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "budget"}},
        {"role": "toolresult", "name": "workspace.search", "content": {"documents": [{"id": "n1", "text": "Budget: 4200 EUR"}]}},
        {"role": "assistant", "content": "Your notes say the budget is 4200 EUR.", "cite": "n1"}]},
)


def probe_sequences(block_size: int, tokenizer=None) -> list[list[int]]:
    """Token ids of PROBE_EPISODES (serialize_episode), each cut to ``block_size``."""
    from mypt_lightning.tokens.protocol import serialize_episode

    return [serialize_episode(e, tokenizer=tokenizer)[0][:block_size] for e in PROBE_EPISODES]


@torch.no_grad()
def logit_shift(model: MyPT, probes: list[list[int]] | None = None) -> LogitShift:
    """How far dropping lm_head.bias moves the logits, and how often the top-1 token and
    the top-5 set stay, at every position of ``probes`` (default: probe_sequences)."""
    probes = probes if probes is not None else probe_sequences(model.config.block_size)
    model.eval()
    bias = model.lm_head.bias.float()
    max_abs, abs_sum, top1, top5, n = 0.0, 0.0, 0.0, 0.0, 0
    for ids in probes:
        with_bias = model(torch.tensor([ids]))[0].float()
        without = with_bias - bias  # the head is affine: the bias is exactly additive
        diff = (with_bias - without).abs()
        max_abs, abs_sum = max(max_abs, float(diff.max())), abs_sum + float(diff.mean(-1).sum())
        top1 += float((with_bias.argmax(-1) == without.argmax(-1)).sum())
        a, b = with_bias.topk(5, dim=-1).indices, without.topk(5, dim=-1).indices
        top5 += float((a[:, :, None] == b[:, None, :]).any(-1).float().mean(-1).sum())
        n += len(ids)
    return LogitShift(max_abs, abs_sum / n, top1 / n, top5 / n, n)


def _is_hf_export(path: Path) -> bool:
    from mypt_lightning.weights.checkpoint import CheckpointError, _read_json

    try:
        return _read_json(path / "config.json").get("model_type") == "llama"
    except CheckpointError:
        return False


def export_hf(
    checkpoint: str | os.PathLike, output_dir: str | os.PathLike, drop_lm_head_bias: bool = False,
    gate_report: str | os.PathLike | None = None,
) -> LogitShift | None:
    """Load any checkpoint format, write a LlamaForCausalLM folder with tokenizer, chat template,
    generation config and model card (``gate_report``: the gate_report.json to quote; default
    the one beside the checkpoint's run). Returns the logit shift when a nonzero lm_head bias
    was dropped, else None. Raises CheckpointError / ExportRefusedError."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from mypt_lightning.weights.hf_model_card import model_card, provenance
    from mypt_lightning.weights.hf_tokenizer import write_tokenizer_files

    model = load_model(checkpoint)
    shift = None
    if model.config.lm_head_bias:
        bias = model.lm_head.bias.detach()
        if bool(bias.abs().max() > 0):
            if not drop_lm_head_bias:
                raise ExportRefusedError(
                    f"{checkpoint}: lm_head has a nonzero bias (max |b| = {float(bias.abs().max()):.4g}); "
                    "Llama has no lm_head bias, so the export would change the model's outputs. "
                    "Pass --drop_lm_head_bias to export without it (the logit shift is reported).")
            shift = logit_shift(model)
    hf_sd = to_hf_state_dict(model)
    config = LlamaConfig(**hf_config_dict(model))
    with atomic_output_dir(output_dir, _is_hf_export) as tmp:
        config.save_pretrained(tmp)
        _add_legacy_rope_keys(tmp / "config.json", model)
        save_file(hf_sd, tmp / HF_WEIGHTS_FILE, metadata={"format": "pt"})
        write_tokenizer_files(tmp, model_max_length=model.config.block_size)
        card = model_card(model.config, provenance(checkpoint, gate_report), shift=shift,
                          num_parameters=sum(t.numel() for t in hf_sd.values()))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return shift


def _add_legacy_rope_keys(config_path: Path, model: MyPT) -> None:
    """transformers 4.x reads rope_theta / rope_scaling; 5.x reads rope_parameters (and accepts both)."""
    c = model.config
    data = json.loads(config_path.read_text())
    # A bare LlamaConfig saves no "architectures"; vLLM and llama.cpp's converter pick the
    # model class from it.
    data["architectures"] = ["LlamaForCausalLM"]
    data["rope_theta"] = c.rope_theta
    data["rope_scaling"] = ({"type": "linear", "rope_type": "linear", "factor": float(c.rope_scale)}
                            if c.rope_scale != 1.0 else None)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
