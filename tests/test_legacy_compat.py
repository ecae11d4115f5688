"""Compatibility with REAL legacy MyPT artefacts, checked against an independent reference.

Facts encoded here were read from the public MyPT source (chberclaz/MyPT, core/model.py and
core/special_tokens.py at commit 34d98f96f8151cc637d8c4391101f24ea5291a0e; scripts/sft/prepare_chat_sft.py
and prepare_tool_sft.py; core/episode_data_loader.py). No MyPT code is reused: the reference forward
below is written from the maths those files describe, so a wrong RoPE layout, position scaling,
norm, MLP rule or head bias in our model shows up as a logit difference (tests/test_checkpoint.py only
round-trips our own model through legacy names, which cannot catch those).

Legacy facts used:
* state-dict names: token_embedding_table, blocks.N.sa.qkv / sa.proj, blocks.N.fwd.w_gate / w_up / w_down,
  blocks.N.ln1 / ln2 (RMSNorm ``weight``), ln_f, lm_head (nn.Linear with its default bias=True, always);
  RoPE tables are non-persistent buffers (not in the state dict); tied weights appear under both names.
* qkv rows are q | k | v, each split into heads contiguously; RoPE is split-half ("rotate_half") with
  tables (T, head_dim/2) of angle (pos / rope_scale) * theta^(-2i/hd); RMSNorm eps fixed at 1e-6;
  SwiGLU hidden = round_up(int(8d/3), 64) and its three linears have NO bias even when config.bias;
  attention scale 1/sqrt(head_dim) (SDPA default); no final-logit transform.
* packed rows: positions restart where segment_ids change (segment_position_reset), attention only
  within the same segment id and causal.
* checkpoint folder: model.pt = {"state_dict", "checkpoint_dtype", "model_dtype"} or a raw state_dict;
  config.json = dataclasses.asdict(GPTConfig) (all fields, incl. training ones).
* special tokens pinned at 50257..50275 in the order system, user, assistant, user_context,
  assistant_context, toolcall, toolresult, think, cite (open, close each), eot.
* datasets: mask[i] belongs to token i; the loader forms x = seq[:-1], y = seq[1:], mask_y = m[1:].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_modules.collate import make_training_example
from mypt_lightning.weights.checkpoint import load_model
from mypt_lightning.tokens.protocol import toolcall_json
from mypt_lightning.tokens.special_tokens import SPECIAL_TOKENS, VOCAB_SIZE

torch.set_num_threads(2)

D, H, L, V = 64, 4, 2, 50304
HD = D // H
HIDDEN = ((int(8 * D / 3) + 63) // 64) * 64  # legacy SwiGLU rule: 170 -> 192


def legacy_config(**overrides) -> dict:
    """config.json as legacy GPTConfig.save_json writes it (asdict: every field)."""
    cfg = {
        "batch_size": 32, "block_size": 64, "vocab_size": V, "n_embd": D, "n_head": H, "n_layer": L,
        "dropout": 0.2, "bias": False, "use_checkpoint": False, "device": "cpu", "use_loss_mask": True,
        "tie_weights": False, "save_dtype": None, "pos_encoding": "rope", "mlp_type": "swiglu",
        "norm_type": "rmsnorm", "rope_theta": 10000.0, "rope_scale": 1.0, "segment_position_reset": True,
        "neftune_alpha": 0.0, "batch_sampling_mode": "epoch", "pad_token_id": None, "episode_min_tokens": 2,
        "epoch_seed": 1337, "epoch_shuffle": True, "epoch_drop_last": True,
    }
    cfg.update(overrides)
    return cfg


def legacy_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    sd = {"token_embedding_table.weight": r(V, D, std=0.3)}
    for i in range(L):
        p = f"blocks.{i}."
        sd[p + "sa.qkv.weight"] = r(3 * D, D, std=0.2)
        sd[p + "sa.proj.weight"] = r(D, D, std=0.2)
        if cfg["bias"]:
            sd[p + "sa.qkv.bias"] = r(3 * D)
            sd[p + "sa.proj.bias"] = r(D)
        sd[p + "fwd.w_gate.weight"] = r(HIDDEN, D, std=0.2)
        sd[p + "fwd.w_up.weight"] = r(HIDDEN, D, std=0.2)
        sd[p + "fwd.w_down.weight"] = r(D, HIDDEN, std=0.2)
        sd[p + "ln1.weight"] = 1 + r(D, std=0.2)
        sd[p + "ln2.weight"] = 1 + r(D, std=0.2)
    sd["ln_f.weight"] = 1 + r(D, std=0.2)
    sd["lm_head.weight"] = sd["token_embedding_table.weight"] if cfg["tie_weights"] else r(V, D, std=0.3)
    sd["lm_head.bias"] = r(V, std=0.5)  # legacy lm_head = nn.Linear(n_embd, vocab_size): bias always
    return sd


def write_folder(path: Path, cfg: dict, sd: dict, wrapped: bool = True) -> Path:
    path.mkdir(parents=True)
    payload = {"state_dict": sd, "checkpoint_dtype": None, "model_dtype": "float32"} if wrapped else sd
    torch.save(payload, path / "model.pt")
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "tokenizer.json").write_text(json.dumps({"token_kind": "gpt2", "chars": None}))
    (path / "training_state.json").write_text(json.dumps({"step": 10, "model_dtype_at_save": "float32"}))
    return path


# ----------------------------------------------------------------------------- independent reference
def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _positions(segment_ids, T):
    if segment_ids is None:
        return torch.arange(T)[None]
    pos = torch.zeros_like(segment_ids)
    for b in range(segment_ids.shape[0]):
        for t in range(1, T):
            same = segment_ids[b, t] == segment_ids[b, t - 1]
            pos[b, t] = pos[b, t - 1] + 1 if same else 0
    return pos


def reference_logits(cfg, sd, idx, segment_ids=None):
    """The legacy forward, in float64, written from its maths."""
    sd = {k: v.double() for k, v in sd.items()}
    B, T = idx.shape
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, HD, 2).double() / HD))
    ang = (_positions(segment_ids, T).double() / cfg["rope_scale"])[..., None] * inv  # (B|1, T, HD/2)
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]

    def rope(x):  # split-half
        x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
    x = sd["token_embedding_table.weight"][idx]
    for i in range(L):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "ln1.weight"])
        qkv = F.linear(h, sd[p + "sa.qkv.weight"], sd.get(p + "sa.qkv.bias"))
        q, k, v = (t.view(B, T, H, HD).transpose(1, 2) for t in qkv.split(D, dim=-1))
        q, k = rope(q), rope(k)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(HD)
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(y, sd[p + "sa.proj.weight"], sd.get(p + "sa.proj.bias"))
        h = _rms(x, sd[p + "ln2.weight"])
        x = x + F.linear(F.silu(F.linear(h, sd[p + "fwd.w_gate.weight"])) * F.linear(h, sd[p + "fwd.w_up.weight"]),
                         sd[p + "fwd.w_down.weight"])
    return F.linear(_rms(x, sd["ln_f.weight"]), sd["lm_head.weight"], sd["lm_head.bias"])


IDS = torch.randint(0, 50276, (2, 40), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("rope_scale", [1.0, 4.0, 3.0])
@pytest.mark.parametrize("wrapped", [True, False])
def test_legacy_checkpoint_logits_match_reference(tmp_path, tie, rope_scale, wrapped):
    cfg = legacy_config(tie_weights=tie, rope_scale=rope_scale)
    sd = legacy_state_dict(cfg)
    model = load_model(write_folder(tmp_path / "ckpt", cfg, sd, wrapped=wrapped))
    assert model.config.lm_head_bias and model.config.tie_weights == tie
    assert model.config.rope_scale == rope_scale and model.config.hidden_dim == HIDDEN
    assert model.config.norm_eps == 1e-6
    with torch.no_grad():
        ours = model(IDS).double()
    ref = reference_logits(cfg, sd, IDS)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_legacy_packed_forward_matches_reference(tmp_path):
    cfg = legacy_config(rope_scale=2.0)
    sd = legacy_state_dict(cfg, seed=1)
    model = load_model(write_folder(tmp_path / "ckpt", cfg, sd), config_overrides={"attn_impl": "sdpa"})
    seg = torch.tensor([[1] * 10 + [2] * 15 + [3] * 9 + [0] * 6, [1] * 40])
    with torch.no_grad():
        ours = model(IDS, segment_ids=seg).double()
    ref = reference_logits(cfg, sd, IDS, segment_ids=seg)
    real = seg > 0  # padding rows of the pack are never read
    torch.testing.assert_close(ours[real], ref[real], atol=2e-4, rtol=1e-4)


def test_legacy_bf16_state_dict_loads_as_float32(tmp_path):
    cfg = legacy_config(tie_weights=True)
    sd = {k: v.to(torch.bfloat16) for k, v in legacy_state_dict(cfg).items()}
    sd["lm_head.weight"] = sd["token_embedding_table.weight"]
    model = load_model(write_folder(tmp_path / "ckpt", {**cfg, "save_dtype": "bf16"}, sd))
    assert model.embed.weight.dtype == torch.float32 and model.lm_head.weight is model.embed.weight
    with torch.no_grad():
        ours = model(IDS[:, :16]).double()
    torch.testing.assert_close(ours, reference_logits(cfg, {k: v.float() for k, v in sd.items()}, IDS[:, :16]),
                               atol=2e-4, rtol=1e-4)


def test_legacy_bias_true_checkpoint_loads(tmp_path):
    cfg = legacy_config(bias=True)
    sd = legacy_state_dict(cfg)
    model = load_model(write_folder(tmp_path / "ckpt", cfg, sd))
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).double(), reference_logits(cfg, sd, IDS), atol=2e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- tokens and data
def test_special_token_ids_are_the_pinned_legacy_ids():
    legacy = {"system": 50257, "user": 50259, "assistant": 50261, "user_context": 50263,
              "assistant_context": 50265, "toolcall": 50267, "toolresult": 50269, "think": 50271, "cite": 50273}
    for name, open_id in legacy.items():
        assert SPECIAL_TOKENS[f"<myPT_{name}>"] == open_id
        assert SPECIAL_TOKENS[f"</myPT_{name}>"] == open_id + 1
    assert SPECIAL_TOKENS["<myPT_eot>"] == 50275 and len(SPECIAL_TOKENS) == 19 and VOCAB_SIZE == 50304


def test_toolcall_json_is_the_legacy_serialization():
    # legacy serialize_toolcall: json.dumps({"name": name, **arguments}, ensure_ascii=False)
    assert toolcall_json("workspace.search", {"query": "Zürich", "top_k": 3}) == \
        '{"name": "workspace.search", "query": "Zürich", "top_k": 3}'


def test_mask_alignment_matches_legacy_loader():
    """Legacy loader: x = seq[:-1], y = seq[1:], mask_y = m[1:] (m[i] is the weight of token i)."""
    tokens = np.array([50257, 11, 50258, 50259, 12, 13, 50260, 50261, 14, 15, 50262, 50275], dtype=np.int64)
    mask = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float32)
    ex = make_training_example(tokens, mask)
    np.testing.assert_array_equal(ex["input_ids"], tokens[:-1])
    np.testing.assert_array_equal(ex["labels"], tokens[1:])
    np.testing.assert_array_equal(ex["loss_weights"], mask[1:])


def test_legacy_tokenizer_state_is_accepted_and_shifted_ids_are_refused():
    from mypt_lightning.tokens.special_tokens import SPECIAL_TOKENS
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    tok = get_tokenizer()
    legacy = {"token_kind": "gpt2", "chars": None, "base_vocab_size": 50257, "model_vocab_size": 50304,
              "special_token_encoder": dict(SPECIAL_TOKENS), "special_token_version": 2}
    tok.check_state_dict(legacy)  # the original pipeline's layout, same tokens: accepted
    shifted = dict(legacy, special_token_encoder={**SPECIAL_TOKENS, "<myPT_eot>": 50271})
    with pytest.raises(ValueError, match="special_token_encoder differs.*<myPT_eot>"):
        tok.check_state_dict(shifted)
    with pytest.raises(ValueError, match="token_kind"):
        tok.check_state_dict(dict(legacy, token_kind="char"))
