"""Read a transformers ``LlamaForCausalLM`` folder as MyPT weights (the inverse of hf_export).

Accepted: ``config.json`` with ``model_type: llama`` and weights in ``model.safetensors`` or
sharded (``model.safetensors.index.json`` + the shards it names), whose architecture is one
MyPT can run::

    num_key_value_heads == num_attention_heads   (no GQA)
    head_dim == hidden_size / num_attention_heads, hidden_act silu, mlp_bias false
    RoPE "default" or "linear" (factor -> rope_scale)
    attention_bias -> bias, tie_word_embeddings -> tie_weights (both heads work)

Names map back as in hf_export's table (q/k/v rows concatenated into ``attn.qkv``).
Everything is read with safetensors: no pickle. Anything that does not fit is a
CheckpointError naming the field and what MyPT would need.

>>> model = load_model("some/hf_llama_folder")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mypt_lightning.model import MyPTConfig

HF_INDEX_FILE = "model.safetensors.index.json"
HF_WEIGHTS_FILE = "model.safetensors"
# Buffers older transformers versions saved with the weights: recomputed, not weights.
_IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


def _error(msg: str):
    from mypt_lightning.weights.checkpoint import CheckpointError

    return CheckpointError(msg)


def is_hf_llama(folder: Path, config: dict) -> bool:
    weights = (folder / HF_WEIGHTS_FILE).is_file() or (folder / HF_INDEX_FILE).is_file()
    return weights and config.get("model_type") == "llama"


def config_from_hf(hf: dict, where: str) -> MyPTConfig:
    """MyPTConfig of a transformers LlamaConfig dict, or CheckpointError naming what does not fit."""
    def need(key):
        if key not in hf:
            raise _error(f"{where}: missing {key!r}")
        return hf[key]

    heads, d = need("num_attention_heads"), need("hidden_size")
    problems = []
    kv = hf.get("num_key_value_heads") or heads
    if kv != heads:
        problems.append(f"num_key_value_heads={kv} != num_attention_heads={heads} (grouped-query attention; "
                        "MyPT has one key/value head per query head)")
    if isinstance(d, int) and isinstance(heads, int) and heads > 0:
        head_dim = hf.get("head_dim") or d // heads
        if head_dim * heads != d:
            problems.append(f"head_dim={head_dim} x {heads} heads != hidden_size={d} (MyPT needs head_dim = hidden/heads)")
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={hf['hidden_act']!r} (MyPT's MLP is SwiGLU: silu)")
    if hf.get("mlp_bias", False):
        problems.append("mlp_bias=true (MyPT's MLP has no biases)")
    if hf.get("pretraining_tp", 1) not in (1, None):
        problems.append(f"pretraining_tp={hf['pretraining_tp']} (re-save the model with transformers first)")
    theta, scale = _rope(hf, where, problems)
    if problems:
        raise _error(f"{where}: this Llama does not fit the MyPT architecture: {'; '.join(problems)}")
    fields = dict(vocab_size=need("vocab_size"), n_embd=d, n_head=heads, n_layer=need("num_hidden_layers"),
                  block_size=need("max_position_embeddings"), bias=bool(hf.get("attention_bias", False)),
                  tie_weights=bool(hf.get("tie_word_embeddings", False)), rope_theta=theta, rope_scale=scale,
                  norm_eps=hf.get("rms_norm_eps", 1e-6), lm_head_bias=False)
    bad = MyPTConfig.field_errors(fields)
    if bad:
        raise _error(f"{where}: bad model config: {'; '.join(bad)}")
    config = MyPTConfig.from_dict(fields)
    hidden = need("intermediate_size")
    if hidden != config.hidden_dim:  # keep mlp_hidden null when it is MyPT's default size
        config = MyPTConfig.from_dict({**fields, "mlp_hidden": hidden})
    return config


def _rope(hf: dict, where: str, problems: list[str]) -> tuple[float, float]:
    """(rope_theta, rope_scale) from transformers 5 ``rope_parameters`` or 4.x ``rope_theta``/``rope_scaling``."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        theta, scaling = params["rope_theta"], params
    else:
        theta, scaling = hf.get("rope_theta", 10000.0), hf.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        problems.append(f"rope_scaling={scaling!r} is not an object")
        return float(theta), 1.0
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return float(theta), 1.0
    if kind == "linear":
        return float(theta), float(scaling.get("factor", 1.0))
    problems.append(f"RoPE type {kind!r} (MyPT has plain and linearly scaled RoPE only)")
    return float(theta), 1.0


def _shard_files(folder: Path) -> list[Path]:
    if (folder / HF_WEIGHTS_FILE).is_file():
        return [folder / HF_WEIGHTS_FILE]
    from mypt_lightning.weights.checkpoint import _read_json

    index = _read_json(folder / HF_INDEX_FILE)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise _error(f"{folder / HF_INDEX_FILE}: no 'weight_map'")
    names = sorted(set(weight_map.values()), key=str)
    for name in names:  # a shard is a file of this folder, nothing else
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise _error(f"{folder / HF_INDEX_FILE}: shard {name!r} is not a file name inside {folder}")
    return [folder / n for n in names]


def read_hf_llama(folder: Path, hf_config: dict) -> tuple[dict[str, torch.Tensor], MyPTConfig]:
    """(our state dict, MyPTConfig) of a LlamaForCausalLM folder; shapes are checked by the caller."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = config_from_hf(hf_config, str(folder / "config.json"))
    hf: dict[str, torch.Tensor] = {}
    for file in _shard_files(folder):
        try:
            hf.update(load_file(file))
        except (SafetensorError, OSError) as e:
            raise _error(f"{file}: cannot read safetensors: {e}") from None
    hf = {k: v for k, v in hf.items() if not _IGNORED.match(k)}
    sd: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        try:
            return hf.pop(name)
        except KeyError:
            raise _error(f"{folder}: weight {name!r} missing") from None

    sd["embed.weight"] = take("model.embed_tokens.weight")
    sd["norm_f.weight"] = take("model.norm.weight")
    head = hf.pop("lm_head.weight", None)
    if not config.tie_weights:
        if head is None:
            raise _error(f"{folder}: tie_word_embeddings is false but there is no lm_head.weight")
        sd["lm_head.weight"] = head
    elif head is not None and not torch.equal(head, sd["embed.weight"]):
        raise _error(f"{folder}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
    params = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layer):
        hf_p, ours = f"model.layers.{i}.", f"blocks.{i}."
        sd[ours + "attn_norm.weight"] = take(hf_p + "input_layernorm.weight")
        sd[ours + "mlp_norm.weight"] = take(hf_p + "post_attention_layernorm.weight")
        for p in params:
            q, k, v = (take(f"{hf_p}self_attn.{x}_proj.{p}") for x in "qkv")
            if not (q.shape == k.shape == v.shape):
                raise _error(f"{folder}: layer {i}: q/k/v {p} shapes {tuple(q.shape)}, {tuple(k.shape)}, "
                             f"{tuple(v.shape)} differ (grouped-query attention is not supported)")
            sd[f"{ours}attn.qkv.{p}"] = torch.cat([q, k, v], dim=0)
            sd[f"{ours}attn.proj.{p}"] = take(f"{hf_p}self_attn.o_proj.{p}")
        for mine, theirs in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")):
            sd[f"{ours}mlp.{mine}.weight"] = take(f"{hf_p}mlp.{theirs}.weight")
    if hf:
        raise _error(f"{folder}: weights MyPT has no place for: {sorted(hf)[:10]}")
    return sd, config


__all__ = ["config_from_hf", "read_hf_llama", "is_hf_llama", "HF_INDEX_FILE"]
