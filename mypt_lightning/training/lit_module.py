"""The LightningModule: the MyPT transformer, weighted-mask loss, AdamW + warmup/cosine.

Loss (docs/design.md section 4) is ``sum(w * nll) / sum(w)`` where both sums run over the
whole optimizer step: every gradient-accumulation micro-batch and every rank. A
per-micro-batch mean would weigh a micro-batch with 10 supervised tokens as much as
one with 10,000. To get the exact step-level ratio we use manual optimization:

    micro-batch k:   backward( sum_k(w * nll) / C )          C: one constant for the run (_loss_scale)
    end of step:     grads *= C * world_size / W_step         W_step = sum(w) over micro-batches and ranks
                                                              (DDP averages gradients, hence world_size)

which leaves the gradient of ``sum(w * nll) / W_step`` in every parameter, then clips,
steps, and logs the step's loss. Gradient accumulation is therefore ours
(``accumulate_grad_batches`` here), not the Trainer's.

Metrics go to the loggers at ``global_step`` (optimizer steps), so a resumed run's
curve continues where it stopped: train/loss, train/ppl, train/lr, train/grad_norm,
train/tokens_per_sec, train/supervised_tokens, train/supervised_fraction,
train/masked_token_acc, and val/<set>/loss|ppl|acc for each validation set.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.training.distributed import backward_sync, clip_grad_norm
from mypt_lightning.training.fault_tolerance import stop_requested_here
from mypt_lightning.training.loggers import wandb_loggers
from mypt_lightning.training.optim import OptimConfig, build_optimizer


class NonFiniteLossError(RuntimeError):
    """Raised after too many optimizer steps in a row had a NaN/inf loss or gradient."""


def weighted_token_stats(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    """Sums that make up the loss and metrics of one micro-batch.

    ``logits`` (N, vocab) and ``labels``/``weights`` (N,) cover the positions to score
    (the trainer passes only supervised ones). Returns ``nll_sum = sum(w * nll)`` (with
    grad), ``weight_sum = sum(w)``, the count of supervised tokens (w > 0) and how many of
    them the argmax predicts.
    """
    vocab = logits.size(-1)
    nll = F.cross_entropy(logits.float().reshape(-1, vocab), labels.reshape(-1), reduction="none")
    w = weights.reshape(-1).to(nll.dtype)
    supervised = w > 0
    with torch.no_grad():
        correct = (logits.detach().argmax(-1).reshape(-1) == labels.reshape(-1)) & supervised
    return {
        "nll_sum": (nll * w).sum(),
        "weight_sum": w.sum().detach(),
        "supervised": supervised.sum().detach(),
        "correct": correct.sum().detach(),
    }


class MyPTLitModule(L.LightningModule):
    """Trains :class:`~mypt_lightning.model.MyPT` on weighted-mask batches.

    Args:
        model: ``MyPTConfig`` fields (the Hydra ``model`` group).
        optim: ``OptimConfig`` fields (lr, weight_decay, betas, warmup_steps, grad_clip, ...).
        max_steps: optimizer steps of the run (the cosine schedule ends there).
        accumulate_grad_batches: micro-batches per optimizer step.
        init_from: weights to start from (any format ``load_model`` reads); weights only.
        compile: wrap the model in ``torch.compile``.
        max_consecutive_nonfinite: stop after this many skipped steps in a row.
        val_set_names: names of the validation dataloaders, in order (``val`` first).

    Example:
        >>> module = MyPTLitModule(model=MyPTConfig.tiny().to_dict(), optim={"lr": 1e-3}, max_steps=10)
        >>> module.configure_model(); module.model.config.n_layer
        2
    """

    def __init__(
        self,
        model: dict,
        optim: dict | None = None,
        max_steps: int = 1000,
        accumulate_grad_batches: int = 1,
        init_from: str | None = None,
        compile: bool = False,
        max_consecutive_nonfinite: int = 5,
        val_set_names: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model_config = MyPTConfig.from_dict(dict(model))
        self.optim_config = OptimConfig(**dict(optim or {}))
        self.accumulate = int(accumulate_grad_batches)
        if self.accumulate < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        self.val_set_names = list(val_set_names or ["val"])
        self.model: MyPT | None = None
        self._micro_step = 0
        self._step_sums: dict[str, torch.Tensor] = {}
        self._step_tokens = 0
        self._last_step_time: float | None = None
        self._nonfinite_in_a_row = 0
        self.skipped_steps = 0
        self._val_sums: dict[int, dict[str, torch.Tensor]] = {}
        self.last_step_metrics: dict[str, float] = {}  # the latest optimizer step's train/* metrics
        self.last_val_metrics: dict[str, float] = {}  # the latest validation's val/<set>/* (console, summary)
        self.tokens_trained = 0  # tokens of the optimizer steps this process ran, all ranks (summary's tokens/s)
        self.start_step = 0  # the optimizer step this process started at (a resumed run's checkpoint step)
        # Set at each step's end from the step's one all-reduce: some rank was asked to stop
        # (the Preemption callback's flag travels with the loss sums; fault_tolerance.py).
        self.stop_requested_anywhere = False

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        """Build the transformer (once) and load ``init_from`` weights if given."""
        if self.model is not None:
            return
        self.model = MyPT(self.model_config)
        if self.hparams.init_from:
            from mypt_lightning.weights.checkpoint import check_architecture, load_weights

            state_dict, found = load_weights(self.hparams.init_from)
            check_architecture(found, self.model_config, source=str(self.hparams.init_from))
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
            missing = [k for k in missing if not k.startswith("lm_head.") or not self.model_config.tie_weights]
            if missing or unexpected:
                raise RuntimeError(
                    f"init_from {self.hparams.init_from}: missing keys {missing}, unexpected keys {unexpected}"
                )
        if self.hparams.compile:
            self.model = torch.compile(self.model)

    def forward(self, batch: dict, predict_mask: torch.Tensor | None = None) -> torch.Tensor:
        if batch.get("packed", False):
            return self.model(batch["input_ids"], segment_ids=batch["segment_ids"], predict_mask=predict_mask)
        return self.model(batch["input_ids"], seq_lengths=batch.get("seq_lengths"), predict_mask=predict_mask)

    def _batch_stats(self, batch: dict) -> dict:
        """Loss sums over the supervised positions only (weight-0 targets cannot move the loss)."""
        supervised = batch["loss_weights"] > 0
        logits = self(batch, predict_mask=supervised)
        return weighted_token_stats(logits, batch["labels"][supervised], batch["loss_weights"][supervised])

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.optim_config, self.hparams.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _loss_scale(self) -> float:
        """The normaliser C of every micro-batch's backward: tokens of one micro-batch row at
        the model's context, times the micro-batches of a step.

        It must be the same for every micro-batch of a step and on every rank, because the
        end-of-step correction multiplies the summed gradient by one ``C``. A per-batch
        quantity (the padded width of THIS micro-batch, say) would weigh micro-batches of
        different widths differently, and make ranks apply different updates. Its size only
        keeps low-precision gradients in range; it cancels exactly.
        """
        return float(self.model_config.block_size * self.accumulate)

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        last_micro = self._micro_step == self.accumulate - 1
        scale = self._loss_scale()

        # Gradients are all-reduced on the last micro-batch of a step only (DDP; FSDP differs).
        with backward_sync(self.trainer.strategy, self.model, last_micro):
            stats = self._batch_stats(batch)
            self.manual_backward(stats["nll_sum"] / scale)

        for key, value in stats.items():
            value = value.detach().float()
            self._step_sums[key] = self._step_sums.get(key, 0) + value
        self._step_tokens += int(batch["seq_lengths"].sum()) if "seq_lengths" in batch else batch["input_ids"].numel()
        self._micro_step += 1
        if not last_micro:
            return

        sums = self._reduce_step_sums()
        weight_sum = float(sums["weight_sum"])
        loss = float(sums["nll_sum"]) / weight_sum if weight_sum > 0 else float("nan")
        if weight_sum > 0:
            factor = scale * self.trainer.world_size / weight_sum
            for param in self.model.parameters():
                if param.grad is not None:
                    param.grad.mul_(factor)
        grad_norm = self._clip_gradients(optimizer)

        if math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
            self._nonfinite_in_a_row = 0
        else:
            # Lightning's optimizer wrapper counts global_step on .step(); a skipped step
            # must still advance it so schedules and checkpoints stay aligned.
            self._skip_step(optimizer, loss, grad_norm, batch, batch_idx)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        now = time.perf_counter()
        tokens = sums["tokens"]
        self.tokens_trained += int(tokens)
        metrics = {
            "train/loss": loss,
            "train/ppl": math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan"),
            "train/lr": scheduler.get_last_lr()[0],
            "train/grad_norm": grad_norm,
            "train/supervised_tokens": float(sums["supervised"]),
            "train/supervised_fraction": float(sums["supervised"]) / max(1.0, float(tokens)),
            "train/masked_token_acc": float(sums["correct"]) / max(1.0, float(sums["supervised"])),
            "train/skipped_steps": float(self.skipped_steps),
        }
        if self._last_step_time is not None:
            metrics["train/tokens_per_sec"] = float(tokens) / max(1e-9, now - self._last_step_time)
        self._last_step_time = now
        self.last_step_metrics = metrics
        self._log_metrics(metrics)
        self.log("loss", loss, prog_bar=True, logger=False, on_step=True, batch_size=1)
        self._micro_step = 0
        self._step_sums = {}
        self._step_tokens = 0

    STEP_SUMS = ("nll_sum", "weight_sum", "supervised", "correct")

    def _reduce_step_sums(self) -> dict[str, float]:
        """The step's sums over all ranks, in ONE all-reduce: the loss sums, the tokens seen and
        whether any rank's :class:`~mypt_lightning.training.fault_tolerance.Preemption` was
        signalled (so every rank agrees on the step at which it stops)."""
        local = torch.stack([self._step_sums[k] for k in self.STEP_SUMS]
                            + [torch.tensor(float(self._step_tokens), device=self.device),
                               torch.tensor(float(stop_requested_here(self.trainer)), device=self.device)])
        total = self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
        sums = dict(zip((*self.STEP_SUMS, "tokens", "stop"), total))
        self.stop_requested_anywhere = sums.pop("stop") > 0
        return sums

    @property
    def at_step_boundary(self) -> bool:
        """No micro-batch of the next optimizer step has run yet (a checkpoint here resumes exactly)."""
        return self._micro_step == 0

    def _clip_gradients(self, optimizer) -> float:
        """Clip to ``grad_clip`` (0 disables clipping) and return the pre-clip total norm."""
        return clip_grad_norm(self.model, self.optim_config.grad_clip or float("inf"))

    def _skip_step(self, optimizer, loss: float, grad_norm: float, batch: dict, batch_idx: int) -> None:
        self.skipped_steps += 1
        self._nonfinite_in_a_row += 1
        # Advance Lightning's step counter without touching the weights.
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()
        ids = batch.get("sample_ids")
        sample_ids = ids.tolist() if ids is not None else "unknown"
        message = (
            f"non-finite loss or gradient at step {self.global_step} (batch index {batch_idx}): "
            f"loss={loss}, grad_norm={grad_norm}; dataset sample ids of the last micro-batch: {sample_ids}"
        )
        if self._nonfinite_in_a_row >= self.hparams.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{message}. Stopping after {self._nonfinite_in_a_row} non-finite steps in a row "
                f"(max_consecutive_nonfinite={self.hparams.max_consecutive_nonfinite})."
            )
        self.print(f"[mypt] skipped step: {message}")

    # ------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        stats = self._batch_stats(batch)
        sums = self._val_sums.setdefault(dataloader_idx, {})
        for key, value in stats.items():
            sums[key] = sums.get(key, 0) + value.detach().float()

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        for idx, name in enumerate(self.val_set_names):
            local = self._val_sums.get(idx)
            zero = torch.zeros((), device=self.device)
            values = torch.stack([local[k] if local else zero for k in self.STEP_SUMS])
            nll_sum, weight_sum, supervised, correct = self.trainer.strategy.reduce(values, reduce_op="sum").tolist()
            if float(weight_sum) == 0:
                continue
            loss = float(nll_sum) / float(weight_sum)
            metrics[f"val/{name}/loss"] = loss
            metrics[f"val/{name}/ppl"] = math.exp(min(loss, 50.0))
            metrics[f"val/{name}/acc"] = float(correct) / max(1.0, float(supervised))
        if metrics and not self.trainer.sanity_checking:
            self._log_metrics(metrics)
            self.last_val_metrics = metrics
        first = f"val/{self.val_set_names[0]}/loss"
        if first in metrics:
            # For ModelCheckpoint(monitor="val_loss") and the progress bar.
            self.log("val_loss", metrics[first], prog_bar=True, logger=False, sync_dist=False)

    # ---------------------------------------------------------------- logging
    def _log_metrics(self, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mypt_model_config"] = asdict(self.model_config)
        checkpoint["mypt_train_state"] = {
            "micro_step": self._micro_step,
            "skipped_steps": self.skipped_steps,
            # Every rank calls this hook; rank 0 writes the file, so it collects all streams.
            "rng_per_rank": _gather_from_ranks(_capture_rng_state()),
        }
        for logger in wandb_loggers(self.loggers):
            if logger.version:
                checkpoint["wandb_run_id"] = logger.version

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("mypt_train_state", {})
        self._micro_step = int(state.get("micro_step", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        per_rank = state.get("rng_per_rank") or ([state["rng"]] if "rng" in state else [])  # "rng": older files
        if len(per_rank) == self.trainer.world_size:
            self._pending_rng = per_rank[self.global_rank]
        else:  # resumed on a different number of ranks: rank 0 continues, the others start fresh streams
            self._pending_rng = per_rank[0] if per_rank and self.global_rank == 0 else None

    def on_train_start(self) -> None:
        # Restore RNG after Lightning has set up everything that might draw random numbers,
        # so dropout and NEFTune noise continue exactly where the interrupted run stopped.
        self.start_step = self.global_step
        pending = getattr(self, "_pending_rng", None)
        if pending is not None:
            _restore_rng_state(pending)
            self._pending_rng = None
        elif self.global_rank > 0:
            # seed_everything gives every rank the same seed, so without this all ranks
            # would draw the same dropout masks and NEFTune noise for their different
            # samples. Rank 0 keeps the stream a single process would have.
            torch.manual_seed(torch.initial_seed() + RANK_SEED_STRIDE * self.global_rank)


RANK_SEED_STRIDE = 1_000_003  # rank r > 0 draws its noise from seed + r * stride


def _gather_from_ranks(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective when several ranks run)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _capture_rng_state() -> dict:
    # Only tensors and plain Python values, so checkpoints load with torch.load(weights_only=True).
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
