"""MyPT model: RoPE vs transformers, packing golden tests, NEFTune, KV cache, 750M shapes.

Logit parity with transformers' LlamaForCausalLM (the model's correctness test) lives
in test_export_hf.py, where the reference is loaded from our exported folder.
"""

from __future__ import annotations

import pytest
import torch

from mypt_lightning.model import MyPT, MyPTConfig, segment_positions

torch.set_num_threads(2)


def sharp_model(**overrides) -> MyPT:
    """A tiny model whose attention is far from uniform, so masks and positions matter."""
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(**overrides))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(8.0)
    return model.eval()


def flex_cpu_forward_available() -> bool:
    try:
        m = sharp_model(attn_impl="flex")
        with torch.no_grad():
            m(torch.zeros(1, 8, dtype=torch.long), segment_ids=torch.ones(1, 8, dtype=torch.long))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not on this build"
        return False


FLEX_OK = flex_cpu_forward_available()
CPU_IMPLS = [
    "sdpa",
    "eager",
    pytest.param("flex", marks=pytest.mark.skipif(not FLEX_OK, reason="FlexAttention forward fails on CPU here")),
]


def packed_batch(lengths_per_row, T, vocab=50304, seed=1):
    """ids, segment_ids (1-based episodes, 0 = trailing padding), and the episodes as lists."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths_per_row), T), 50256, dtype=torch.long)
    seg = torch.zeros(len(lengths_per_row), T, dtype=torch.long)
    episodes = []
    for b, lengths in enumerate(lengths_per_row):
        start = 0
        for s, n in enumerate(lengths, start=1):
            tok = torch.randint(0, vocab, (n,), generator=g)
            ids[b, start : start + n], seg[b, start : start + n] = tok, s
            episodes.append((b, start, tok))
            start += n
    return ids, seg, episodes


# ----------------------------------------------------------------------------- config


def test_config_round_trip_and_unknown_keys():
    c = MyPTConfig.tiny(rope_scale=4.0)
    assert MyPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown MyPTConfig field\(s\): \['bogus', 'n_embed'\]"):
        MyPTConfig.from_dict({**c.to_dict(), "n_embed": 1, "bogus": 2})
    assert MyPTConfig().hidden_dim == 3456
    with pytest.raises(ValueError, match="attn_impl"):
        MyPTConfig(attn_impl="xformers")


def test_750m_on_meta_device():
    with torch.device("meta"):
        model = MyPT(MyPTConfig.gpt750m())
    n = model.num_parameters()
    # embed 50304*1280 + 32 * (3*1280^2 + 1280^2 + 3*1280*3456 + 2*1280) + 1280; head tied
    expected = 50304 * 1280 + 32 * (4 * 1280 * 1280 + 3 * 1280 * 3456 + 2 * 1280) + 1280
    assert n == expected == 698_860_800
    assert model.num_parameters(exclude_embeddings=True) == expected - 50304 * 1280
    assert model.lm_head.weight is model.embed.weight
    b = model.blocks[0]
    assert b.attn.qkv.weight.shape == (3 * 1280, 1280) and b.attn.proj.weight.shape == (1280, 1280)
    assert b.mlp.w_gate.weight.shape == b.mlp.w_up.weight.shape == (3456, 1280)
    assert b.mlp.w_down.weight.shape == (1280, 3456)
    assert len(model.blocks) == 32 and model.rope_cos.shape == (4096, 64)
    assert "rope_cos" not in model.state_dict()  # never saved, never loaded


def test_meta_to_empty_then_reset():
    with torch.device("meta"):
        model = MyPT(MyPTConfig.tiny())
    model.to_empty(device="cpu")
    model.tie_weights()
    model.reset_rope_cache()
    model.init_weights()
    ref = MyPT(MyPTConfig.tiny())
    assert torch.equal(model.rope_cos, ref.rope_cos) and torch.equal(model.rope_sin, ref.rope_sin)
    assert model.lm_head.weight is model.embed.weight
    assert torch.isfinite(model(torch.zeros(1, 4, dtype=torch.long))).all()


def test_init_statistics():
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(n_embd=256, n_layer=8, n_head=4))
    resid = 0.02 / (2 * 8) ** 0.5
    assert abs(model.embed.weight.std().item() - 0.02) < 1e-3
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 1e-3
    assert abs(model.blocks[3].attn.proj.weight.std().item() - resid) < 3e-4
    assert abs(model.blocks[3].mlp.w_down.weight.std().item() - resid) < 3e-4
    assert torch.equal(model.norm_f.weight, torch.ones(256))


# ----------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("rope_scale", [1.0, 4.0])
def test_rope_tables_match_transformers(rope_scale):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = MyPTConfig.tiny(rope_scale=rope_scale, rope_theta=10000.0)
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if rope_scale != 1.0:
        rope = {"rope_type": "linear", "factor": rope_scale, "rope_theta": 10000.0}
    hf = LlamaRotaryEmbedding(LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters=rope,
                                          max_position_embeddings=256))
    pos = torch.arange(256)[None]
    cos, sin = hf(torch.zeros(1, dtype=torch.float32), pos)
    model = MyPT(cfg)
    assert model.rope_cos.dtype == torch.float32
    torch.testing.assert_close(model.rope_cos, cos[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.rope_sin, sin[0], rtol=0, atol=1e-6)


def test_rope_tables_stay_float32_in_bf16_model():
    model = MyPT(MyPTConfig.tiny()).to(torch.bfloat16)
    model.reset_rope_cache()
    assert model.rope_cos.dtype == torch.float32


# ----------------------------------------------------------------------------- attention paths


@pytest.mark.parametrize("impl", ["eager"])
def test_unpacked_backends_agree(impl):
    ids = torch.randint(0, 50304, (2, 48))
    ref = sharp_model(attn_impl="sdpa")
    other = sharp_model(attn_impl=impl)
    with torch.no_grad():
        torch.testing.assert_close(other(ids), ref(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_packed_equals_separate_episodes(impl):
    """Golden test: a packed row gives, on every real token, the logits of the episode alone."""
    model = sharp_model(attn_impl=impl)
    ids, seg, episodes = packed_batch([[7, 13, 1, 20, 9], [30, 25]], T=64)
    with torch.no_grad():
        packed = model(ids, segment_ids=seg)
        for b, start, tok in episodes:
            alone = model(tok[None])[0]
            torch.testing.assert_close(packed[b, start : start + len(tok)], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_packed_paths_agree_with_absolute_positions(impl):
    ids, seg, _ = packed_batch([[7, 13, 1, 20, 9], [30, 25]], T=64)
    with torch.no_grad():
        ref = sharp_model(attn_impl="eager", segment_position_reset=False)(ids, segment_ids=seg)
        out = sharp_model(attn_impl=impl, segment_position_reset=False)(ids, segment_ids=seg)
        reset = sharp_model(attn_impl=impl)(ids, segment_ids=seg)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # RoPE scores depend on q_pos - k_pos only, and attention never leaves the segment, so
    # restarting positions per segment changes rounding, not the result.
    torch.testing.assert_close(out, reset, rtol=1e-4, atol=1e-4)


def test_segment_positions():
    seg = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0], [5, 5, 5, 5, 5, 5, 5, 5]])
    assert segment_positions(seg).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))]


def test_packed_training_backward_on_cpu_auto():
    """auto on CPU takes the SDPA dense-mask path, which has a backward."""
    model = sharp_model().train()
    ids, seg, _ = packed_batch([[10, 20, 30]], T=64)
    model(ids, segment_ids=seg).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


# ----------------------------------------------------------------------------- NEFTune


def _embedding_noise(model, ids, **kw):
    """What NEFTune added: the input of the first block minus the clean embedding."""
    seen = {}
    def record(module, args):  # returns None: a pre-hook's return value would replace the inputs
        seen.setdefault("x", args[0].detach())

    handle = model.blocks[0].register_forward_pre_hook(record)
    try:
        model(ids, **kw)
    finally:
        handle.remove()
    return seen["x"] - model.embed(ids).detach()


def test_neftune_off_in_eval():
    model = sharp_model(neftune_alpha=10.0)
    ids = torch.randint(0, 50304, (1, 32))
    assert _embedding_noise(model.eval(), ids).abs().max() == 0
    assert _embedding_noise(model.train(), ids).abs().max() > 0


def test_neftune_noise_bounds_per_segment():
    alpha, d = 10.0, 64
    model = sharp_model(neftune_alpha=alpha).train()
    lengths = [30, 100, 120]
    ids, seg, _ = packed_batch([lengths], T=256)  # 6 padding tokens at the end
    noise = _embedding_noise(model, ids, segment_ids=seg)[0]
    start = 0
    for n in lengths + [6]:
        bound = alpha / (n * d) ** 0.5
        amax = noise[start : start + n].abs().max().item()
        assert bound * 0.9 < amax <= bound * (1 + 1e-6), (n, amax, bound)
        start += n


def test_neftune_tensor_vs_episode_scaling():
    alpha, d, T = 5.0, 64, 256
    ids, seg, _ = packed_batch([[30, 226]], T=T)
    episode = _embedding_noise(sharp_model(neftune_alpha=alpha).train(), ids, segment_ids=seg)[0]
    tensor = _embedding_noise(sharp_model(neftune_alpha=alpha, neftune_scale="tensor").train(), ids,
                              segment_ids=seg)[0]
    assert tensor.abs().max() <= alpha / (T * d) ** 0.5 * (1 + 1e-6)
    ratio = episode[:30].abs().max() / tensor[:30].abs().max()
    assert 0.8 * (T / 30) ** 0.5 < ratio < 1.2 * (T / 30) ** 0.5  # ~2.9x more noise on the short episode


def test_neftune_seq_lengths_for_padded_rows():
    alpha, d = 5.0, 64
    model = sharp_model(neftune_alpha=alpha).train()
    ids = torch.randint(0, 50304, (2, 128))
    noise = _embedding_noise(model, ids, seq_lengths=torch.tensor([16, 128]))
    for b, n in enumerate([16, 128]):
        bound = alpha / (n * d) ** 0.5
        assert bound * 0.9 < noise[b].abs().max() <= bound * (1 + 1e-6)


# ----------------------------------------------------------------------------- dropout, checkpointing


def test_dropout_only_in_training():
    model = sharp_model(dropout=0.2)
    ids = torch.randint(0, 50304, (1, 32))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), model(ids))
        model.train()
        assert not torch.equal(model(ids), model(ids))


def test_activation_checkpointing_same_gradients():
    ids, seg, _ = packed_batch([[20, 30, 14]], T=64)
    grads = []
    for ckpt in (False, True):
        model = sharp_model(activation_checkpointing=ckpt).train()
        model(ids, segment_ids=seg).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_kv_cache_decode_matches_full_forward(impl):
    model = sharp_model(attn_impl=impl)
    ids = torch.randint(0, 50304, (2, 40))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch_size=2, max_seq_len=64)
        steps = [model(ids[:, :10], kv_cache=cache), model(ids[:, 10:15], kv_cache=cache)]  # prefill, chunk
        steps += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(15, 40)]  # one token at a time
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_limits():
    model = sharp_model()
    with pytest.raises(ValueError, match="block_size"):
        model.new_kv_cache(1, 1000)
    cache = model.new_kv_cache(1, 8)
    with pytest.raises(ValueError, match="segment_ids with kv_cache"):
        model(torch.zeros(1, 4, dtype=torch.long), segment_ids=torch.ones(1, 4, dtype=torch.long), kv_cache=cache)
