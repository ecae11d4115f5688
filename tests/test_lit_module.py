"""The LightningModule's loss semantics (docs/design.md section 4), checked against hand computations."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mypt_lightning.training.lit_module import MyPTLitModule
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.training.optim import lr_multiplier, parameter_groups
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, EOT

CONFIG = MyPTConfig.tiny(n_embd=32, n_head=2, n_layer=2, block_size=64)


def make_rows(n: int, length: int = 12, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        tokens = torch.randint(0, CONFIG.vocab_size, (length + 1,), generator=g)
        weights = (torch.rand(length, generator=g) > 0.4).float()
        weights[0] = 1.0  # every row supervises something
        rows.append({"input_ids": tokens[:-1], "labels": tokens[1:], "loss_weights": weights, "sample_id": i})
    return rows


def collate(rows: list[dict]) -> dict:
    """Right-pad rows of any lengths to the longest (dynamic padding, as the DataModule does)."""
    width = max(len(r["input_ids"]) for r in rows)

    def padded(key: str, fill) -> torch.Tensor:
        return torch.stack([F.pad(r[key], (0, width - len(r[key])), value=fill) for r in rows])

    return {
        "input_ids": padded("input_ids", 0),
        "labels": padded("labels", 0),
        "loss_weights": padded("loss_weights", 0.0),
        "seq_lengths": torch.tensor([len(r["input_ids"]) for r in rows]),
        "sample_ids": torch.tensor([r["sample_id"] for r in rows]),
        "packed": False,
    }


class CaptureGrads(L.Callback):
    def __init__(self):
        self.grads = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters()})


class CaptureLoss(L.pytorch.loggers.logger.Logger):
    """Minimal in-memory logger: records what the module logs per optimizer step."""

    def __init__(self):
        super().__init__()
        self.rows = []

    name = "capture"
    version = "0"

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def run_steps(batches: list[dict], accumulate: int, init_state: dict, steps: int = 1, precision="32-true"):
    """Train ``steps`` optimizer steps on ``batches`` (``accumulate`` micro-batches each);
    returns the per-step gradients, the per-step train/loss and the trained module."""
    module = MyPTLitModule(
        model=CONFIG.to_dict(),
        optim={"lr": 1e-3, "warmup_steps": 0, "grad_clip": 0.0},
        max_steps=steps,
        accumulate_grad_batches=accumulate,
    )
    module.configure_model()
    module.model.load_state_dict(init_state)
    grads, logger = CaptureGrads(), CaptureLoss()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=logger, callbacks=[grads], precision=precision,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == steps
    losses = [m["train/loss"] for _, m in logger.rows if "train/loss" in m]
    assert len(losses) == steps
    return grads.grads, losses, module


def run_one_step(batches: list[dict], accumulate: int, init_state: dict) -> tuple[dict, float]:
    grads, losses, _ = run_steps(batches, accumulate, init_state, steps=1)
    return grads[0], losses[0]


def reference_loss(model: MyPT, rows: list[dict]) -> torch.Tensor:
    """sum(w * nll) / sum(w) over all rows, computed directly."""
    batch = collate(rows)
    logits = model(batch["input_ids"])
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1), reduction="none")
    w = batch["loss_weights"].reshape(-1)
    return (nll * w).sum() / w.sum()


def test_accumulated_micro_batches_equal_one_big_batch():
    torch.manual_seed(0)
    init = MyPT(CONFIG).state_dict()
    rows = make_rows(4)
    # Rows with very different supervised counts: a per-micro-batch mean would differ.
    rows[1]["loss_weights"][:] = 0.0
    rows[1]["loss_weights"][0] = 1.0
    grads_big, loss_big = run_one_step([collate(rows)], accumulate=1, init_state=init)
    grads_acc, loss_acc = run_one_step([collate([r]) for r in rows], accumulate=4, init_state=init)

    model = MyPT(CONFIG)
    model.load_state_dict(init)
    model.eval()  # tiny config has no dropout/NEFTune; eval keeps the reference deterministic
    ref = reference_loss(model, rows)
    ref.backward()
    assert loss_big == pytest.approx(ref.item(), rel=1e-5)
    assert loss_acc == pytest.approx(ref.item(), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads_big[name], param.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads_acc[name], param.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("accumulate", [2, 3, 4])
def test_accumulating_micro_batches_of_different_widths_equals_one_batch(accumulate):
    """Dynamic padding gives every micro-batch its own width; the step's normaliser must not
    depend on it. Three steps: the losses of every step and the trained weights equal those
    of one batch per step holding the same samples (dropout and NEFTune off: tiny config)."""
    torch.manual_seed(3)
    init = MyPT(CONFIG).state_dict()
    steps, per_micro = 3, 2
    per_step = accumulate * per_micro
    lengths = [5, 40, 9, 23, 60, 7, 31, 14]  # widths differ from micro-batch to micro-batch
    rows = [make_rows(1, length=lengths[i % len(lengths)], seed=100 + i)[0] for i in range(steps * per_step)]
    step_rows = [rows[s * per_step:(s + 1) * per_step] for s in range(steps)]
    micro = [collate(r[i:i + per_micro]) for r in step_rows for i in range(0, per_step, per_micro)]
    for s in range(steps):  # really different widths inside every step
        assert len({b["input_ids"].shape[1] for b in micro[s * accumulate:(s + 1) * accumulate]}) > 1
    _, losses_big, big = run_steps([collate(r) for r in step_rows], 1, init, steps=steps, precision="64-true")
    _, losses_acc, acc = run_steps(micro, accumulate, init, steps=steps, precision="64-true")
    assert next(acc.model.parameters()).dtype == torch.float64

    model = MyPT(CONFIG)
    model.load_state_dict(init)
    model.eval()
    assert losses_big[0] == pytest.approx(reference_loss(model, step_rows[0]).item(), rel=1e-5)
    assert losses_acc == pytest.approx(losses_big, rel=1e-5)
    for (name, pa), (_, pb) in zip(acc.model.named_parameters(), big.model.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_stop_token_weights_change_the_loss_as_specified():
    torch.manual_seed(1)
    init = MyPT(CONFIG).state_dict()
    rows = make_rows(2, length=10, seed=3)
    for r in rows:  # put a </myPT_assistant><myPT_eot> pair at the end, weighted 2.0
        r["labels"][-2:] = torch.tensor([ASSISTANT_CLOSE, EOT])
        r["loss_weights"][:] = 1.0
        r["loss_weights"][-2:] = 2.0
    _, loss = run_one_step([collate(rows)], accumulate=1, init_state=init)

    model = MyPT(CONFIG)
    model.load_state_dict(init)
    batch = collate(rows)
    with torch.no_grad():
        logits = model(batch["input_ids"])
        nll = F.cross_entropy(logits.reshape(-1, CONFIG.vocab_size), batch["labels"].reshape(-1), reduction="none")
    nll = nll.reshape(2, 10)
    # Hand computation: 8 content tokens at 1.0 and 2 stop tokens at 2.0 per row.
    expected = (nll[:, :-2].sum() + 2.0 * nll[:, -2:].sum()) / (2 * (8 + 2 * 2.0))
    unweighted = nll.mean()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert loss != pytest.approx(unweighted.item(), rel=1e-5)


def test_weight_decay_groups_exclude_norms_and_embedding():
    model = MyPT(CONFIG)
    decay, no_decay = parameter_groups(model, 0.05)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.embed.weight) not in decayed
    assert all(id(b.attn_norm.weight) not in decayed for b in model.blocks)
    assert id(model.blocks[0].attn.qkv.weight) in decayed
    assert id(model.blocks[0].mlp.w_down.weight) in decayed
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_warmup_then_cosine():
    values = [lr_multiplier(s, warmup_steps=4, max_steps=20, min_lr_ratio=0.1) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert values[20] == pytest.approx(0.1)
    assert values[12] == pytest.approx(0.55)  # halfway through the decay


def test_predict_mask_returns_logits_of_the_selected_positions_only():
    torch.manual_seed(2)
    model = MyPT(CONFIG).eval()
    ids = torch.randint(0, 50000, (2, 10))
    mask = torch.rand(2, 10) > 0.5
    full = model(ids)
    torch.testing.assert_close(model(ids, predict_mask=mask), full[mask])
    segments = torch.tensor([[1] * 4 + [2] * 6, [1] * 10])
    torch.testing.assert_close(model(ids, segment_ids=segments, predict_mask=mask), model(ids, segment_ids=segments)[mask])
