"""Checks that need a CUDA GPU (issue 6); skipped elsewhere, so CI (no GPU) skips them.

    python -m pytest -q -m gpu -s        # on a GPU machine; -s shows the measured numbers

* the FlexAttention training path gives the loss and gradients of SDPA with a dense mask;
* bf16 FSDP on one device trains, writes sharded checkpoints, and resumes from one;
* one training step of the 750M model at batch 4 x 4096 fits on the device (peak memory
  printed), with and without activation checkpointing.

Throughput and MFU are measured by benchmarks/bench_gpu_train.py, not here (no timing
thresholds in tests).
"""

from __future__ import annotations

import pytest
import torch

from mypt_lightning.training.lit_module import weighted_token_stats
from mypt_lightning.model import MyPT, MyPTConfig
from helpers import write_packed_dataset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def packed_batch(batch: int, T: int, episodes: int, device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        cuts = torch.sort(torch.randperm(T - 1, generator=gen)[: episodes - 1] + 1).values
        lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([T])]))
        rows.append(torch.repeat_interleave(torch.arange(1, episodes + 1), lengths))
    seg = torch.stack(rows).to(device)
    ids = torch.randint(0, 50000, (batch, T), generator=gen).to(device)
    labels = torch.randint(0, 50000, (batch, T), generator=gen).to(device)
    weights = (torch.rand(batch, T, generator=gen) > 0.5).float().to(device)
    return ids, labels, weights, seg


def loss_and_grads(model: MyPT, batch, dtype, keep_grads: bool = True):
    ids, labels, weights, seg = batch
    model.zero_grad(set_to_none=True)
    supervised = weights > 0
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        logits = model(ids, segment_ids=seg, predict_mask=supervised)
    stats = weighted_token_stats(logits, labels[supervised], weights[supervised])
    loss = stats["nll_sum"] / stats["weight_sum"]
    loss.backward()
    if not keep_grads:
        return loss.detach(), None
    return loss.detach(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flex_training_step_matches_sdpa_with_dense_mask(dtype):
    config = MyPTConfig(vocab_size=50304, n_embd=256, n_head=4, n_layer=4, block_size=1024,
                        rope_scale=1.0, dropout=0.0, neftune_alpha=0.0)
    batch = packed_batch(2, 1024, episodes=5, device="cuda")
    results = {}
    for impl in ("sdpa", "flex"):
        torch.manual_seed(0)
        model = MyPT(MyPTConfig.from_dict({**config.to_dict(), "attn_impl": impl})).cuda().train()
        results[impl] = loss_and_grads(model, batch, dtype)
    (loss_s, grads_s), (loss_f, grads_f) = results["sdpa"], results["flex"]
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert loss_f.item() == pytest.approx(loss_s.item(), rel=tol)
    for name, g in grads_s.items():
        cos = torch.nn.functional.cosine_similarity(g.flatten(), grads_f[name].flatten(), dim=0).item()
        assert cos > (0.99999 if dtype == torch.float32 else 0.995), (name, cos)


def test_fsdp_bf16_on_one_gpu_trains_writes_sharded_checkpoints_and_resumes(tmp_path):
    from mypt_lightning import load_model
    from mypt_lightning.weights.checkpoint import detect_format
    from test_distributed import read_losses, run_training

    dataset = write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)
    fsdp = {"trainer": "fsdp", "trainer.devices": 1, "trainer.precision": "bf16-mixed",
            "train.checkpoint_every_steps": 2}
    result = run_training(dataset, tmp_path / "run", **fsdp)
    assert "FSDP: 3 units" in result.stdout + result.stderr
    losses = read_losses(tmp_path / "run")
    assert sorted(losses) == [1, 2, 3, 4] and all(v == v for v in losses.values())
    checkpoints = tmp_path / "run" / "checkpoints"
    assert detect_format(checkpoints / "last.ckpt") == "lightning-sharded"
    last, exported = load_model(checkpoints / "last.ckpt"), load_model(tmp_path / "run" / "export")
    for (name, a), (_, b) in zip(last.named_parameters(), exported.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    run_training(dataset, tmp_path / "resumed", **fsdp, ckpt_path=str(checkpoints / "step000002.ckpt"))
    resumed = read_losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):  # GPU kernels may reduce in a different order run to run
        assert resumed[step] == pytest.approx(losses[step], rel=1e-4), step


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_750m_training_step_at_batch_4x4096_fits(activation_checkpointing):
    from omegaconf import OmegaConf

    from helpers import ROOT

    fields = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "gpt750m.yaml"))
    fields.pop("compile")
    fields.update(attn_impl="flex", activation_checkpointing=activation_checkpointing)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device("cuda"):
        model = MyPT(MyPTConfig.from_dict(fields)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    batch = packed_batch(4, 4096, episodes=8, device="cuda")
    for _ in range(2):  # the second step has AdamW's moments allocated
        loss, _ = loss_and_grads(model, batch, torch.bfloat16, keep_grads=False)
        optimizer.step()
    peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    print(f"\n750M, batch 4 x 4096, bf16 autocast, FlexAttention, activation checkpointing="
          f"{activation_checkpointing}: peak {peak / 2**30:.1f} GiB of {total / 2**30:.0f} GiB, loss {loss.item():.3f}")
    assert torch.isfinite(loss)
    assert peak < 0.95 * total
