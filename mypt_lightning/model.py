"""MyPT: the LLaMA-2-style decoder, whole, in one file (docs/design.md section 3).

Pre-norm blocks: RMSNorm (float32) -> fused-qkv attention with RoPE -> residual,
RMSNorm -> SwiGLU MLP -> residual; final RMSNorm; lm_head tied to the embedding.

State-dict names (ours; ``checkpoint.py`` maps the legacy MyPT names and
``hf_export.py`` the transformers Llama names onto these)::

    embed.weight                          (vocab, d)
    blocks.{i}.attn_norm.weight           (d,)
    blocks.{i}.attn.qkv.weight            (3d, d)    rows: q | k | v, heads contiguous in each
    blocks.{i}.attn.proj.weight           (d, d)
    blocks.{i}.mlp_norm.weight            (d,)
    blocks.{i}.mlp.w_gate.weight          (hidden, d)
    blocks.{i}.mlp.w_up.weight            (hidden, d)
    blocks.{i}.mlp.w_down.weight          (d, hidden)
    norm_f.weight                         (d,)
    lm_head.weight                        (vocab, d) the same tensor as embed.weight when tied
    lm_head.bias                          (vocab,)   only with lm_head_bias (legacy checkpoints)
    (+ ``.bias`` of every linear in a block when config.bias)

Packed batches: ``segment_ids`` (B, T) label each token with its episode (0 = padding,
which is a segment of its own). A token attends to earlier tokens of its own segment
only, and its RoPE position counts from the start of that segment::

    segment_ids  1 1 1 2 2 3 3 3 0 0        mask (row attends to columns marked x)
    positions    0 1 2 0 1 0 1 2 0 1          1 1 1 2 2 3 3 3 0 0
                                          1   x
                                          1   x x
                                          1   x x x
                                          2         x
                                          2         x x
                                          3             x ...

Segments must be contiguous runs (the data modules write them that way): the mask
compares ids, positions restart wherever the id changes.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mypt_lightning.tokens.special_tokens import VOCAB_SIZE

ARCHITECTURE_FIELDS = ("vocab_size", "n_embd", "n_head", "n_layer", "bias", "tie_weights", "mlp_hidden", "lm_head_bias")
ATTN_IMPLS = ("auto", "sdpa", "flex", "eager")
NEFTUNE_SCALES = ("episode", "tensor")
_POSITIVE_INT_FIELDS = ("vocab_size", "n_embd", "n_head", "n_layer", "block_size")
_POSITIVE_FLOAT_FIELDS = ("rope_theta", "rope_scale", "norm_eps")
_BOOL_FIELDS = ("bias", "tie_weights", "segment_position_reset", "lm_head_bias", "activation_checkpointing")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _field_problem(name: str, value) -> str | None:
    """What ``value`` should have been for MyPTConfig field ``name``, or None if it is fine."""
    if name in _POSITIVE_INT_FIELDS or name == "mlp_hidden":
        if name == "mlp_hidden" and value is None:
            return None
        ok = _is_int(value) and value >= 1
        return None if ok else "a positive integer" + (" or null" if name == "mlp_hidden" else "")
    if name in _POSITIVE_FLOAT_FIELDS:
        return None if _is_number(value) and value > 0 else "a positive number"
    if name == "dropout":
        return None if _is_number(value) and 0 <= value < 1 else "a number in [0, 1)"
    if name == "neftune_alpha":
        return None if _is_number(value) and value >= 0 else "a number >= 0"
    if name in _BOOL_FIELDS:
        return None if isinstance(value, bool) else "true or false"
    if name == "attn_impl":
        return None if isinstance(value, str) and value in ATTN_IMPLS else f"one of {ATTN_IMPLS}"
    if name == "neftune_scale":
        return None if isinstance(value, str) and value in NEFTUNE_SCALES else f"one of {NEFTUNE_SCALES}"
    return None


@dataclass
class MyPTConfig:
    vocab_size: int = VOCAB_SIZE
    n_embd: int = 1280
    n_head: int = 20
    n_layer: int = 32
    block_size: int = 4096
    bias: bool = False
    tie_weights: bool = True
    rope_theta: float = 10000.0
    rope_scale: float = 1.0
    norm_eps: float = 1e-6
    mlp_hidden: int | None = None  # None -> round_up(int(8 * d / 3), 64): 3456 at d=1280
    dropout: float = 0.0
    neftune_alpha: float = 0.0
    neftune_scale: str = "episode"  # "episode": L = own segment length; "tensor": L = T (transformers)
    # Positions restart per segment (True) or run 0..T-1 over the pack (False). RoPE scores depend
    # on q_pos - k_pos only and attention stays inside a segment, so this changes rounding only.
    segment_position_reset: bool = True
    # Packed batches: auto = FlexAttention on CUDA, SDPA + dense mask elsewhere; flex | sdpa force
    # one; eager = explicit math (the reference). Unpacked batches use SDPA is_causal (eager: math).
    attn_impl: str = "auto"
    lm_head_bias: bool = False  # legacy MyPT checkpoints carry an lm_head bias vector
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of even size")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={self.attn_impl!r}; expected one of {ATTN_IMPLS}")
        if self.neftune_scale not in NEFTUNE_SCALES:
            raise ValueError(f"neftune_scale={self.neftune_scale!r}; expected one of {NEFTUNE_SCALES}")
        if self.rope_scale <= 0:
            raise ValueError(f"rope_scale must be > 0, got {self.rope_scale}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        """The SwiGLU hidden size actually used (mlp_hidden resolved)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return (int(8 * self.n_embd / 3) + 63) // 64 * 64

    @classmethod
    def gpt750m(cls, **overrides) -> MyPTConfig:
        return cls(**overrides)  # the defaults are the 750M model

    @classmethod
    def tiny(cls, **overrides) -> MyPTConfig:
        base = dict(vocab_size=VOCAB_SIZE, n_embd=64, n_head=4, n_layer=2, block_size=256)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MyPTConfig:
        """A config from untrusted values (a checkpoint's config.json, a Hydra config): unknown
        fields, wrong types and out-of-range values are a ValueError naming every bad field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MyPTConfig field(s): {unknown}; known fields: {sorted(known)}")
        problems = cls.field_errors(d)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**d)

    @staticmethod
    def field_errors(d: dict) -> list[str]:
        """``"<field>: expected ..., got <value>"`` for each value of ``d`` of the wrong type or
        range (checked before construction, so no TypeError/ZeroDivisionError from deep inside)."""
        problems = []
        for name, value in d.items():
            wanted = _field_problem(name, value)
            if wanted:
                shown = repr(value)
                problems.append(f"{name}: expected {wanted}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")
        return problems


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight``, computed in float32, cast back to x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:  # FSDP calls this when materialising meta modules
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def build_rope_cache(config: MyPTConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (block_size, head_dim), float32. angle(p, i) = (p / rope_scale) * theta^(-2i/hd).

    Computed exactly as transformers' linear-scaled Llama RoPE (inv_freq / factor, then
    position * inv_freq), so exported models reproduce our logits.
    """
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device=device).float() / hd))
    inv_freq = inv_freq / config.rope_scale
    pos = torch.arange(config.block_size, device=device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)  # split-half layout ("rotate_half")
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd); cos/sin broadcastable to it, float32. Rotation done in float32."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its segment (a run of equal ids), (B, T) int64.

    >>> segment_positions(torch.tensor([[1, 1, 1, 2, 2, 0]])).tolist()
    [[0, 1, 2, 0, 1, 0]]
    """
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device).expand(B, T)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    run_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - run_start


def segment_lengths(segment_ids: torch.Tensor) -> torch.Tensor:
    """Number of tokens in the row that share each token's segment id, (B, T) float."""
    ids = segment_ids.long()
    counts = torch.zeros(ids.shape[0], int(ids.max()) + 1, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
    return counts.gather(1, ids)


@dataclass
class AttnMask:
    """How attention is restricted in one forward pass; built once, shared by all blocks.

    kind: "causal" (SDPA is_causal), "none" (one new token against the cache),
    "dense" (bool (B|1, 1, Tq, Tk), True = may attend) or "flex" (a FlexAttention BlockMask).
    """

    kind: str
    dense: torch.Tensor | None = None
    block_mask: object | None = None


_compiled_flex = None


def _flex_attention(q, k, v, block_mask):
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu":  # unfused reference implementation; forward only (no CPU backward)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return flex_attention(q, k, v, block_mask=block_mask)
    global _compiled_flex
    if _compiled_flex is None:  # compiled once per process: the fused kernel
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


class KVCache:
    """Preallocated keys/values for incremental decoding: (n_layer, B, H, max_seq_len, hd) each.

    ``length`` tokens are filled; MyPT.forward writes the new tokens of every layer at
    [length, length + T) and then advances ``length`` by T.
    """

    def __init__(self, n_layer, batch_size, n_head, max_seq_len, head_dim, device=None, dtype=None) -> None:
        shape = (n_layer, batch_size, n_head, max_seq_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reset(self) -> None:
        self.length = 0

    def keep(self, rows: torch.Tensor, drop_front: int = 0) -> None:
        """Keep only batch ``rows`` (a long tensor of indices) and drop the first
        ``drop_front`` columns (padding no kept row needs): batched decoding sheds rows
        that have finished, so later steps do not spend compute on them."""
        self.k = self.k[:, rows, :, drop_front:]
        self.v = self.v[:, rows, :, drop_front:]
        self.length -= drop_front


class CausalSelfAttention(nn.Module):
    def __init__(self, config: MyPTConfig) -> None:
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask: AttnMask, kv_cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        H, hd = self.config.n_head, self.config.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        p = self.config.dropout if self.training else 0.0
        impl = self.config.attn_impl
        if impl == "eager":
            y = self._eager(q, k, v, mask, p)
        elif mask.kind == "flex":
            # FlexAttention has no dropout: attention-prob dropout is skipped on this path
            # (residual dropout still applies). MyPT.forward warns once.
            y = _flex_attention(q, k, v, mask.block_mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.dense, dropout_p=p, is_causal=mask.kind == "causal"
            )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))

    @staticmethod
    def _eager(q, k, v, mask: AttnMask, p: float):
        """Reference math: softmax(q k^T / sqrt(hd) masked) v, softmax in float32."""
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
        if mask.kind == "causal":
            Tq, Tk = scores.shape[-2:]
            allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril()
        else:
            allowed = mask.dense
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = F.dropout(scores.softmax(-1), p=p).to(v.dtype)
        return probs @ v


class SwiGLU(nn.Module):
    def __init__(self, config: MyPTConfig) -> None:
        super().__init__()
        d, h = config.n_embd, config.hidden_dim
        # No biases in the MLP even with config.bias: MyPT's SwiGLU never had them (bias only
        # ever applied to the attention projections), and its checkpoints must load.
        self.w_gate = nn.Linear(d, h, bias=False)
        self.w_up = nn.Linear(d, h, bias=False)
        self.w_down = nn.Linear(h, d, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w_down(F.silu(self.w_gate(x)) * self.w_up(x)))


class Block(nn.Module):
    """One pre-norm transformer block (the unit FSDP and activation checkpointing wrap)."""

    def __init__(self, config: MyPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x, cos, sin, mask: AttnMask, kv_cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, kv_cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class MyPT(nn.Module):
    def __init__(self, config: MyPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_weights:
            self.lm_head.weight = self.embed.weight
        cos, sin = build_rope_cache(config, device=self.embed.weight.device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._warned_flex_dropout = False
        self.init_weights()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            if not (module is self.lm_head and self.config.tie_weights):  # tied head: initialised as embed
                nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def init_weights(self) -> None:
        """N(0, 0.02) everywhere, residual projections N(0, 0.02 / sqrt(2 * n_layer)), norms 1."""
        self.apply(self._init_weights)
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:  # the two projections that write into the residual stream
            nn.init.normal_(block.attn.proj.weight, 0.0, resid_std)
            nn.init.normal_(block.mlp.w_down.weight, 0.0, resid_std)

    def tie_weights(self) -> None:
        """Re-tie lm_head to the embedding (``to_empty`` from the meta device unties them)."""
        if self.config.tie_weights:
            self.lm_head.weight = self.embed.weight

    def reset_rope_cache(self) -> None:
        """Rebuild the non-persistent RoPE tables on the embedding's device (after meta ``to_empty``)."""
        cos, sin = build_rope_cache(self.config, device=self.embed.weight.device)
        self.rope_cos, self.rope_sin = cos, sin

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied head counts once); exclude_embeddings drops the embedding table."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.embed.weight), None)
        return sum(p.numel() for p in params.values())

    def new_kv_cache(self, batch_size: int, max_seq_len: int | None = None, device=None, dtype=None) -> KVCache:
        c = self.config
        max_seq_len = max_seq_len or c.block_size
        if max_seq_len > c.block_size:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds block_size={c.block_size} (RoPE table length)")
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return KVCache(c.n_layer, batch_size, c.n_head, max_seq_len, c.head_dim, device, dtype)

    def _padded_mask_and_positions(self, pad_lengths, T, offset):
        """Left-padded rows (batched decoding): row b's first ``pad_lengths[b]`` columns are
        padding. Positions count from each row's first real token; a real query attends to
        the real keys up to itself, a padding query only to itself (so no row of the
        softmax is empty and the padding's keys and values stay finite)."""
        c, dev = self.config, self.embed.weight.device
        pad = pad_lengths.to(dev).long()
        cols = torch.arange(offset, offset + T, device=dev)
        pos = (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
        if int(pos.max()) >= c.block_size:
            raise ValueError(f"sequence reaches position {int(pos.max()) + 1} > block_size={c.block_size}")
        cos, sin = self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1)  # (B, 1, T, hd)
        keys = torch.arange(offset + T, device=dev)
        causal = keys[None, None, :] <= cols[None, :, None]
        real = (keys[None, None, :] >= pad[:, None, None]) | (keys[None, None, :] == cols[None, :, None])
        return AttnMask("dense", dense=(causal & real).unsqueeze(1)), cos, sin

    def _mask_and_positions(self, segment_ids, T, kv_cache, pad_lengths=None):
        """The AttnMask and the RoPE cos/sin for this forward."""
        c, dev = self.config, self.embed.weight.device
        offset = kv_cache.length if kv_cache is not None else 0
        if pad_lengths is not None:
            if segment_ids is not None:
                raise ValueError("pad_lengths and segment_ids cannot be combined")
            return self._padded_mask_and_positions(pad_lengths, T, offset)
        if offset + T > c.block_size:
            raise ValueError(f"sequence reaches position {offset + T} > block_size={c.block_size}")
        if segment_ids is None:
            cos, sin = self.rope_cos[offset : offset + T], self.rope_sin[offset : offset + T]
            if offset == 0:
                return AttnMask("causal"), cos, sin
            if T == 1:
                return AttnMask("none"), cos, sin
            allowed = torch.ones(T, offset + T, dtype=torch.bool, device=dev).tril(diagonal=offset)
            return AttnMask("dense", dense=allowed), cos, sin
        if kv_cache is not None:
            raise ValueError("segment_ids with kv_cache is not supported (decode one episode per row)")
        if segment_ids.shape[1] != T:
            raise ValueError(f"segment_ids shape {tuple(segment_ids.shape)} does not match input length {T}")
        seg = segment_ids.to(dev)
        if c.segment_position_reset:
            pos = segment_positions(seg)
            cos, sin = self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1)  # (B, 1, T, hd)
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        use_flex = c.attn_impl == "flex" or (c.attn_impl == "auto" and dev.type == "cuda")
        if use_flex:
            from torch.nn.attention.flex_attention import create_block_mask

            if dev.type == "cpu" and torch.is_grad_enabled() and self.training:
                raise RuntimeError("attn_impl='flex' has no CPU backward in this torch; use 'sdpa' or 'auto' on CPU")
            if self.training and c.dropout > 0 and not self._warned_flex_dropout:
                warnings.warn("FlexAttention has no attention dropout; only residual/embedding dropout applies")
                self._warned_flex_dropout = True

            def same_segment_causal(b, h, q_idx, kv_idx):
                return (seg[b, q_idx] == seg[b, kv_idx]) & (q_idx >= kv_idx)

            bm = create_block_mask(same_segment_causal, seg.shape[0], None, T, T, device=dev)
            return AttnMask("flex", block_mask=bm), cos, sin
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        allowed = (seg[:, :, None] == seg[:, None, :]) & causal
        return AttnMask("dense", dense=allowed.unsqueeze(1)), cos, sin

    def _neftune(self, x, segment_ids, seq_lengths):
        """emb += U(-1, 1) * alpha / sqrt(L * d), L per token (docs/design.md section 3)."""
        c = self.config
        B, T, d = x.shape
        if c.neftune_scale == "tensor":
            L = torch.full((B, T, 1), float(T), device=x.device)
        elif segment_ids is not None:
            L = segment_lengths(segment_ids.to(x.device)).unsqueeze(-1)
        elif seq_lengths is not None:
            L = seq_lengths.to(x.device).float().clamp(min=1).view(B, 1, 1).expand(B, T, 1)
        else:
            L = torch.full((B, T, 1), float(T), device=x.device)
        scale = c.neftune_alpha / torch.sqrt(L * d)
        noise = torch.empty_like(x).uniform_(-1, 1)
        return x + noise * scale.to(x.dtype)

    def forward(self, input_ids, segment_ids=None, seq_lengths=None, kv_cache: KVCache | None = None,
                predict_mask=None, pad_lengths=None):
        """input_ids (B, T) -> logits (B, T, vocab) float32.

        segment_ids (B, T): packed rows (see module docstring). seq_lengths (B,): unpadded
        length of each right-padded row (only NEFTune uses it). kv_cache: decode
        incrementally (positions continue at kv_cache.length). predict_mask (B, T) bool:
        return logits (N, vocab) for the N selected positions only. Training uses it for
        the supervised positions: in SFT most targets weigh 0, and the vocab-sized head is
        the largest matmul of a small model, so this skips most of its cost and memory.
        pad_lengths (B,): left padding of each row, counted from the first column of the
        cache (batched decoding of prompts of different lengths; see
        ``batch_generation``): positions and the mask then ignore the padding.
        """
        T = input_ids.shape[1]
        mask, cos, sin = self._mask_and_positions(segment_ids, T, kv_cache, pad_lengths)
        x = self.embed(input_ids)
        if self.training and self.config.neftune_alpha > 0:
            x = self._neftune(x, segment_ids, seq_lengths)
        # No dropout on the embedding: MyPT never had one, and the phase presets' dropout
        # rates were tuned with dropout on the attention and residual branches only.
        ckpt = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if ckpt:
                x = checkpoint(block, x, cos, sin, mask, kv_cache, i, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += T
        if predict_mask is not None:
            x = x[predict_mask]
        return self.lm_head(self.norm_f(x)).float()
