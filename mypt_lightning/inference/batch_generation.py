"""Batched decoding: many prompts of different lengths through one forward per token.

The prompts are left-padded into one batch and share one KV cache::

    columns     0 1 2 3 4 5 | 6 7 ...       pad_lengths  [0, 3, 1]
    row 0       a a a a a a | new tokens     positions    0 1 2 3 4 5 | 6 7
    row 1       . . . b b b | new tokens                  - - - 0 1 2 | 3 4
    row 2       . c c c c c | new tokens                  - 0 1 2 3 4 | 5 6

``MyPT.forward(pad_lengths=...)`` counts each row's RoPE positions from its first real
token and masks the padding out of every attention, so a row computes what it would
alone. Then every step feeds one token per row. A row that hits one of *its* stop ids
or *its* budget leaves the batch: its cache rows are dropped (and leading padding
columns no remaining row needs), so later steps only pay for the rows still running.

Greedy outputs are token-identical to :func:`generation.generate` on each prompt alone
(tests/test_batch_generation.py, every attention implementation). Sampling with a
``seed`` gives every row its own generator seeded with it, so a row draws what the prompt
alone would, whatever its neighbours; without a seed the global RNG is used.

>>> results = generate_batch(model, [prompt_a, prompt_b], max_new_tokens=64)  # doctest: +SKIP
>>> [r.stop_reason for r in results]                                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mypt_lightning.inference.generation import GenerationResult, SamplingConfig, generate, process_logits
from mypt_lightning.model import KVCache

PAD_ID = 0  # what fills the padding columns: any real id will do, the mask hides it


@dataclass
class GenerationRequest:
    """One row of a batch: the prompt and, when they differ from the config, its own
    budget and stop ids; ``on_token(id)`` sees the row's tokens as they are made."""

    prompt_ids: Sequence[int]
    max_new_tokens: int | None = None  # None: config.max_new_tokens
    stop_ids: frozenset[int] | None = None  # None: config.resolved_stop_ids()
    on_token: Callable[[int], None] | None = None


def default_batch_size(device=None) -> int:
    """Rows decoded together when the caller does not say: 16 on CPU (the gain flattens
    beyond that on a few cores, benchmarks/bench_decode.py), 64 on a GPU."""
    kind = torch.device(device).type if device is not None else "cpu"
    return 64 if kind == "cuda" else 16


def _as_request(item) -> GenerationRequest:
    if isinstance(item, GenerationRequest):
        return item
    return GenerationRequest(item)


def _ids(prompt) -> list[int]:
    return [int(t) for t in (prompt.tolist() if hasattr(prompt, "tolist") else prompt)]


def generate_batch(model, prompts: Sequence, config: SamplingConfig | None = None, *,
                   batch_size: int | None = None, **overrides) -> list[GenerationResult]:
    """Generate after every prompt (id lists or :class:`GenerationRequest`), at most
    ``batch_size`` rows at a time (default :func:`default_batch_size` for the model's
    device); results in the order of ``prompts``. ``overrides`` change SamplingConfig fields.

    Prompts of similar length go into the same batch (less padding). Without the KV
    cache (``use_kv_cache=False``) each prompt is decoded alone (the reference path).
    """
    config = (config or SamplingConfig()).with_(**overrides)
    requests = [_as_request(p) for p in prompts]
    prompts_ids = [_ids(r.prompt_ids) for r in requests]
    block = model.config.block_size
    for i, ids in enumerate(prompts_ids):
        if not ids:
            raise ValueError(f"prompt {i} is empty; build one with protocol.build_prompt")
        if len(ids) >= block:
            raise ValueError(f"prompt {i} has {len(ids)} tokens but the model's context (block_size) is {block}: "
                             "no room to generate")
    if batch_size is None:
        batch_size = default_batch_size(model.embed.weight.device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[GenerationResult | None] = [None] * len(requests)
    if not config.use_kv_cache:
        for i, r in enumerate(requests):
            results[i] = generate(model, prompts_ids[i], _row_config(config, r), on_token=r.on_token)
        return results
    order = sorted(range(len(requests)), key=lambda i: len(prompts_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        decoded = _decode(model, [prompts_ids[i] for i in chunk], [requests[i] for i in chunk], config)
        for i, result in zip(chunk, decoded):
            results[i] = result
    return results


def _row_config(config: SamplingConfig, request: GenerationRequest) -> SamplingConfig:
    return config.with_(max_new_tokens=request.max_new_tokens, stop_ids=request.stop_ids)


def _decode(model, prompts: list[list[int]], requests: list[GenerationRequest],
            cfg: SamplingConfig) -> list[GenerationResult]:
    """One batch: prefill the padded prompts once, then one token per running row per step."""
    c = model.config
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    n = len(prompts)
    lengths = [len(p) for p in prompts]
    limits = [r.max_new_tokens if r.max_new_tokens is not None else cfg.max_new_tokens for r in requests]
    if min(limits) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {min(limits)}")
    budgets = [min(limit, c.block_size - length) for limit, length in zip(limits, lengths)]
    stops = [_row_config(cfg, r).resolved_stop_ids() for r in requests]
    width = max(lengths)
    pads = [width - length for length in lengths]

    ids = torch.full((n, width), PAD_ID, dtype=torch.long, device=device)
    for b, prompt in enumerate(prompts):
        ids[b, pads[b]:] = torch.tensor(prompt, dtype=torch.long, device=device)
    generators = None
    if not cfg.greedy and cfg.seed is not None:
        generators = [torch.Generator(device=device).manual_seed(cfg.seed) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    results: list[GenerationResult | None] = [None] * n

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # Columns, not positions: a short prompt with a long budget next to a long prompt
            # may need more columns than block_size; each row's positions stay below it.
            cache = KVCache(c.n_layer, n, c.n_head, width + max(budgets), c.head_dim, device, dtype)
            seen = None
            if cfg.repetition_penalty != 1.0:
                seen = torch.zeros(n, c.vocab_size, dtype=torch.bool, device=device)
                for b, prompt in enumerate(prompts):
                    seen[b, torch.tensor(prompt, device=device)] = True
            pad_t = torch.tensor(pads, dtype=torch.long, device=device)
            rows = list(range(n))  # the original row of each cache row still running
            step_input = ids
            while rows:
                last = torch.zeros(step_input.shape, dtype=torch.bool, device=device)
                last[:, -1] = True
                logits = model(step_input, kv_cache=cache, predict_mask=last, pad_lengths=pad_t)
                processed = process_logits(logits, cfg, seen)
                if cfg.greedy:
                    chosen = processed.argmax(-1).tolist()
                else:
                    probs = processed.softmax(-1)
                    if generators is not None:
                        chosen = [int(torch.multinomial(probs[j], 1, generator=generators[b]))
                                  for j, b in enumerate(rows)]
                    else:
                        chosen = torch.multinomial(probs, 1).squeeze(1).tolist()
                keep = []
                for j, b in enumerate(rows):
                    token = chosen[j]
                    tokens[b].append(token)
                    if seen is not None:
                        seen[j, token] = True
                    if requests[b].on_token is not None:
                        requests[b].on_token(token)
                    if token in stops[b]:
                        results[b] = GenerationResult(tokens[b], "stop_token", lengths[b], token)
                    elif len(tokens[b]) == budgets[b]:
                        reason = "max_new_tokens" if budgets[b] == limits[b] else "context_full"
                        results[b] = GenerationResult(tokens[b], reason, lengths[b])
                    else:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(rows):
                    index = torch.tensor(keep, dtype=torch.long, device=device)
                    pad_t = pad_t[index]
                    drop = int(pad_t.min())  # padding columns that no remaining row needs
                    cache.keep(index, drop)
                    pad_t = pad_t - drop
                    if seen is not None:
                        seen = seen[index]
                    rows = [rows[j] for j in keep]
                    chosen = [chosen[j] for j in keep]
                step_input = torch.tensor(chosen, dtype=torch.long, device=device).unsqueeze(1)
    finally:
        if was_training:
            model.train()
    return results


__all__ = ["GenerationRequest", "default_batch_size", "generate_batch"]
