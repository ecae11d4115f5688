"""Strategy factories for the Hydra ``trainer`` group.

Config files cannot name Python classes as values, so the FSDP wrapping policy
(one unit per :class:`~mypt_lightning.model.Block`) is built here.
"""

from __future__ import annotations


def fsdp_strategy(
    sharding_strategy: str = "FULL_SHARD",
    activation_checkpointing: bool = True,
    state_dict_type: str = "sharded",
    limit_all_gathers: bool = True,
    cpu_offload: bool = False,
):
    """Lightning ``FSDPStrategy`` wrapping each transformer block.

    >>> s = fsdp_strategy(activation_checkpointing=False)  # doctest: +SKIP
    """
    from lightning.pytorch.strategies import FSDPStrategy

    from mypt_lightning.model import Block

    return FSDPStrategy(
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
    from lightning.pytorch.strategies import FSDPStrategy

    from mypt_lightning.checkpoint import save_exported
    from mypt_lightning.model import MyPT

    model = getattr(module.model, "_orig_mod", module.model)  # unwrap torch.compile
    if isinstance(trainer.strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        policy = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(trainer.strategy.model, StateDictType.FULL_STATE_DICT, policy):
            full = trainer.strategy.model.state_dict()
        if trainer.is_global_zero:
            prefix = "model."
            state = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in full.items() if k.startswith(prefix)}
            plain = MyPT(model.config)
            plain.load_state_dict(state, strict=False)
            save_exported(plain, export_dir, extra=extra)
        trainer.strategy.barrier("mypt_export")
        return
    if trainer.is_global_zero:
        save_exported(model, export_dir, extra=extra)
    trainer.strategy.barrier("mypt_export")
