"""Turn stored samples into training examples and batches (docs/design.md section 2 and 7)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mypt_lightning.tokens.special_tokens import PAD_ID


def make_training_example(
    tokens: np.ndarray, weights: np.ndarray, segment_ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Shift a stored sample of L tokens into L - 1 (input, target) pairs.

    ``weights[i]`` is the weight of predicting ``tokens[i]``, so the target weights are
    ``weights[1:]``. In a packed sample a target whose segment differs from its input's
    segment (the first token of the next episode, or padding) gets weight 0::

        tokens        a0 a1 a2 b0 b1 P  P          segment_ids  1 1 1 2 2 0 0
        weights        0  1  1  0  1 0  0

        input_ids     a0 a1 a2 b0 b1 P             segment_ids  1 1 1 2 2 0   (of the inputs)
        labels        a1 a2 b0 b1 P  P
        loss_weights   1  1  0  1  0 0
                             ^ a2 -> b0 crosses an episode boundary: never trained
                                   ^ targets in padding (segment 0): never trained

    Unpacked samples (``segment_ids`` None) get segment 1 on every input. Returns numpy
    arrays ``input_ids``/``labels``/``segment_ids`` int64 and ``loss_weights`` float32.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    if tokens.shape != weights.shape or tokens.ndim != 1:
        raise ValueError(f"tokens and weights must be 1-D of equal length, got {tokens.shape} and {weights.shape}")
    input_ids, labels = tokens[:-1], tokens[1:]
    loss_weights = weights[1:].copy()
    if segment_ids is None:
        input_segments = np.ones(input_ids.shape, dtype=np.int64)
    else:
        segment_ids = np.asarray(segment_ids, dtype=np.int64)
        if segment_ids.shape != tokens.shape:
            raise ValueError(f"segment_ids shape {segment_ids.shape} != tokens shape {tokens.shape}")
        input_segments, target_segments = segment_ids[:-1], segment_ids[1:]
        loss_weights[(target_segments != input_segments) | (target_segments == 0)] = 0.0
    return {
        "input_ids": input_ids,
        "labels": labels,
        "loss_weights": loss_weights,
        "segment_ids": input_segments,
    }


def collate_samples(samples: Sequence[dict[str, Any]], pad_id: int = PAD_ID) -> dict[str, Any]:
    """Batch samples from :class:`~data_modules.mixture.MixtureDataset` (or any dataset that
    returns the same keys) into the dict the LightningModule consumes:

    ===============  ============  ==================================================
    input_ids        int64 (B,T)   right-padded with ``pad_id``
    labels           int64 (B,T)   right-padded with ``pad_id``
    loss_weights     float32 (B,T) 0 on padding and across episode boundaries
    segment_ids      int64 (B,T)   packed rows: from the file; unpacked rows: 1, padding 0
    seq_lengths      int64 (B,)    real (non-padding) input tokens per row
    sample_ids       int64 (B,)    index in the row's own dataset (-1: eval padding row)
    source_ids       int64 (B,)    mixture component of the row
    epoch, position  int64 (B,)    sampler key of the row (exact resume)
    packed           bool          any row packed: use the segment-aware attention path
    ===============  ============  ==================================================

    T is the longest row in the batch (not block_size). A batch that mixes packed and
    unpacked rows is packed; its unpacked rows are segment 1 followed by padding 0.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    examples = [make_training_example(s["tokens"], s["weights"], s.get("segment_ids")) for s in samples]
    batch_size = len(examples)
    width = max(1, max(len(e["input_ids"]) for e in examples))
    input_ids = np.full((batch_size, width), pad_id, dtype=np.int64)
    labels = np.full((batch_size, width), pad_id, dtype=np.int64)
    loss_weights = np.zeros((batch_size, width), dtype=np.float32)
    segment_ids = np.zeros((batch_size, width), dtype=np.int64)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = example["input_ids"]
        labels[row, :n] = example["labels"]
        loss_weights[row, :n] = example["loss_weights"]
        segment_ids[row, :n] = example["segment_ids"]

    def column(key: str, default: int) -> torch.Tensor:
        return torch.tensor([int(s.get(key, default)) for s in samples], dtype=torch.int64)

    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "loss_weights": torch.from_numpy(loss_weights),
        "segment_ids": torch.from_numpy(segment_ids),
        "seq_lengths": torch.from_numpy(np.count_nonzero(segment_ids, axis=1).astype(np.int64)),
        "sample_ids": column("sample_id", -1),
        "source_ids": column("source_id", 0),
        "epoch": column("epoch", 0),
        "position": column("position", -1),
        "packed": any(s.get("segment_ids") is not None for s in samples),
    }
