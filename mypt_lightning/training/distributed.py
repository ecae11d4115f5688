"""Distributed training pieces, and the one home of every FSDP special case: the strategy of
``trainer=fsdp``, when gradients synchronise, gradient clipping, and the final export.

Lightning's own ``FSDPStrategy`` makes the *LightningModule* the root FSDP unit, so
``training_step`` runs inside the root's forward. Our LightningModule uses manual
optimization (the step-level weighted loss, docs/design.md section 4) and calls backward inside
``training_step``, which FSDP forbids during its forward (Lightning issues #19626 and
#19685: "Expects BACKWARD_PRE or BACKWARD_POST state but got HandleTrainingState.FORWARD").
:class:`MyPTFSDPStrategy` therefore makes the transformer (``module.model``) the root
unit instead; everything else (sharded checkpoints, optimizer state, activation
checkpointing, launchers) is Lightning's.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def fsdp_root(model: nn.Module | None):
    """The FSDP instance wrapping the transformer (through torch.compile), or None."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    base = getattr(model, "_orig_mod", model)
    return base if isinstance(base, FSDP) else None


def is_fsdp(strategy) -> bool:
    """The run shards its model with FSDP (by type: Lightning's strategy or ours)."""
    return isinstance(strategy, FSDPStrategy)


def backward_sync(strategy, model: nn.Module, last_micro_batch: bool):
    """The context for one micro-batch's backward.

    DDP: skip the gradient all-reduce on all but the last micro-batch of a step. Not under
    FSDP: ``no_sync()`` there keeps every gradient unsharded until the step ends, which
    defeats the memory saving; FSDP reduce-scatters every micro-batch instead.
    """
    block_sync = None if fsdp_root(model) is not None else getattr(strategy, "block_backward_sync", None)
    return block_sync() if (block_sync is not None and not last_micro_batch) else nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the gradients to ``max_norm`` and return the total norm before clipping. Under
    FSDP the gradients are sharded: only the root unit knows the global norm."""
    root = fsdp_root(model)
    if root is not None:
        return float(root.clip_grad_norm_(max_norm))
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))


class MyPTFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy with the transformer, not the LightningModule, as root unit.

    Differences from the parent, each for a reason:

    * Root unit = ``lightning_module.model`` (see the module docstring); one nested unit
      per :class:`~mypt_lightning.model.Block` from ``auto_wrap_policy``. The embedding and
      the tied head live in the root unit, so they stay one tensor.
    * ``*-mixed`` precision keeps the sharded parameters, buffers and gradient reduction
      in float32 and lets the precision plugin's autocast run matmuls in bf16: the same
      numerics as DDP ``bf16-mixed``, so RMSNorm and the RoPE tables (buffers) stay
      float32. Lightning's default would cast parameters *and buffers* to bf16.
    * Sharded checkpoints (a folder per checkpoint) are written to a temp folder beside
      the target (``data_modules.atomic_write``) and swapped into place when every rank
      has finished, so a process killed during a save leaves the previous ``last.ckpt``
      whole (Lightning writes into the final folder directly).
    * ``model.compile=true`` compiles each Block (regional compilation) rather than the
      whole model, which dynamo cannot trace through FSDP's flat parameters.
    * On CPU (gloo) FSDP is told its device is the CPU; Lightning refuses ``fsdp`` with
      ``accelerator=cpu`` by type check, torch accepts it given ``device_id=cpu``. This is
      how CI runs this strategy without a GPU; it is far too slow for real training.
    """

    @property
    def mixed_precision_config(self):
        if self.mixed_precision is None and "mixed" in str(getattr(self.precision_plugin, "precision", "")):
            return None
        return super().mixed_precision_config

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        module = self.lightning_module
        if fsdp_root(module.model) is None:
            compiled = hasattr(module.model, "_orig_mod")
            transformer = getattr(module.model, "_orig_mod", module.model)
            if self._activation_checkpointing_kwargs and transformer.config.activation_checkpointing:
                # The strategy checkpoints every Block already; the model's own switch
                # would recompute each block a second time in backward.
                transformer.config.activation_checkpointing = False
            if compiled:
                # Compiling the whole FSDP-wrapped model fails in dynamo ("attempting to
                # assign a gradient of size [n] to a tensor of size [2n]": FSDP swaps flat
                # shards in and out of the parameters). Compile each Block in place instead
                # (its type stays Block, so the wrapping policies still find it); FSDP's
                # hooks around the blocks stay eager.
                for block in transformer.blocks:
                    block.compile()
            module.model = FSDP(
                transformer,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=self.root_device,  # also on CPU, where Lightning's parent passes None
                **self.kwargs,
            )
        # The parent sees the wrapped transformer, skips its own root wrap and applies
        # activation checkpointing per Block; the policy was used above.
        self.kwargs.pop("auto_wrap_policy", None)
        model = super()._setup_model(model)
        self._report_wrapping(model)
        return model

    def _report_wrapping(self, model: nn.Module) -> None:
        from lightning.pytorch.utilities import rank_zero_info
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        units = len(FSDP.fsdp_modules(model))
        checkpointed = sum(isinstance(m, CheckpointWrapper) for m in model.modules())
        precision = self.mixed_precision_config
        rank_zero_info(
            f"[mypt] FSDP: {units} units (root + one per Block), {self.sharding_strategy.name}, "
            f"activation checkpointing on {checkpointed} blocks, parameters in "
            f"{precision.param_dtype if precision else torch.float32}"
        )

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        if self._state_dict_type != "sharded":  # one file, written atomically by Lightning
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        from data_modules.atomic_write import remove_stale_temps, replace_directory, temp_path

        path = Path(self.broadcast(str(filepath)))
        tmp = None
        if self.global_rank == 0:
            remove_stale_temps(path.parent, path.name)  # what a killed save left
            tmp = str(temp_path(path))
        tmp = Path(self.broadcast(tmp))  # every rank writes its shard into rank 0's temp folder
        self.barrier("mypt_ckpt_clean")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("mypt_ckpt_written")
        if self.global_rank == 0:
            replace_directory(tmp, path)  # also replaces a single-file last.ckpt, atomically
        self.barrier("mypt_ckpt_in_place")


def fsdp_strategy(
    sharding_strategy: str = "FULL_SHARD",
    activation_checkpointing: bool = True,
    state_dict_type: str = "sharded",
    limit_all_gathers: bool = True,
    cpu_offload: bool = False,
) -> MyPTFSDPStrategy:
    """The strategy of ``trainer=fsdp``: one FSDP unit (and one activation-checkpointing
    unit) per :class:`~mypt_lightning.model.Block`.

    >>> type(fsdp_strategy(activation_checkpointing=False)).__name__
    'MyPTFSDPStrategy'
    """
    from mypt_lightning.model import Block

    return MyPTFSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        limit_all_gathers=limit_all_gathers,
        cpu_offload=cpu_offload,
    )


def export_final_model(trainer, module, export_dir, extra: dict | None = None) -> None:
    """Write ``export_dir`` from the trained module, on rank 0; call it on EVERY rank.

    Under FSDP the parameters are sharded, so the full state dict is gathered first (a
    collective: all ranks take part) and rank 0 rebuilds a plain CPU model to save.
    """
    from mypt_lightning.weights.checkpoint import save_exported, strip_wrapper_prefixes
    from mypt_lightning.model import MyPT

    root = fsdp_root(module.model)
    if root is not None:
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        on_gpu = trainer.strategy.root_device.type != "cpu"
        policy = FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=True)
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, policy):
            full = root.state_dict()
        if trainer.is_global_zero:
            plain = MyPT(root.module.config)
            plain.load_state_dict({strip_wrapper_prefixes(k): v for k, v in full.items()}, strict=True)
            save_exported(plain, export_dir, extra=extra)
        trainer.strategy.barrier("mypt_export")
        return
    if trainer.is_global_zero:
        save_exported(getattr(module.model, "_orig_mod", module.model), export_dir, extra=extra)
    trainer.strategy.barrier("mypt_export")

