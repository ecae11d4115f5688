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
caller drops it explicitly; then ``logit_shift`` says how far the logits move.
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


@torch.no_grad()
def logit_shift(model: MyPT, batch_size: int = 2, seq_len: int = 64, seed: int = 0) -> LogitShift:
    """How far dropping lm_head.bias moves the logits, on a fixed random probe batch."""
    g = torch.Generator().manual_seed(seed)
    T = min(seq_len, model.config.block_size)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, T), generator=g)
    with_bias = model.eval()(ids)
    without = with_bias - model.lm_head.bias.float()  # the head is affine: the bias is exactly additive
    diff = (with_bias - without).abs()
    agree = (with_bias.argmax(-1) == without.argmax(-1)).float().mean()
    return LogitShift(float(diff.max()), float(diff.mean()), float(agree))


def _is_hf_export(path: Path) -> bool:
    from mypt_lightning.weights.checkpoint import CheckpointError, _read_json

    try:
        return _read_json(path / "config.json").get("model_type") == "llama"
    except CheckpointError:
        return False


def export_hf(
    checkpoint: str | os.PathLike, output_dir: str | os.PathLike, drop_lm_head_bias: bool = False
) -> LogitShift | None:
    """Load any checkpoint format, write a LlamaForCausalLM folder. Returns the logit shift when a
    nonzero lm_head bias was dropped, else None. Raises CheckpointError / ExportRefusedError."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    model = load_model(checkpoint)
    shift = None
    if model.config.lm_head_bias:
        bias = model.lm_head.bias
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
    return shift


def _add_legacy_rope_keys(config_path: Path, model: MyPT) -> None:
    """transformers 4.x reads rope_theta / rope_scaling; 5.x reads rope_parameters (and accepts both)."""
    c = model.config
    data = json.loads(config_path.read_text())
    data["rope_theta"] = c.rope_theta
    data["rope_scaling"] = ({"type": "linear", "rope_type": "linear", "factor": float(c.rope_scale)}
                            if c.rope_scale != 1.0 else None)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
