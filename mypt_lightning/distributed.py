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
