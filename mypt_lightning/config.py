"""The OmegaConf resolvers that ``conf/`` uses (``${mypt.*}``), registered on import.

What the composed keys may hold is checked by
:func:`mypt_lightning.training.config_checks.validate_config`.

>>> from omegaconf import OmegaConf
>>> register_resolvers()
>>> OmegaConf.create({"a": "${mypt.mul:3,4}"}).a
12
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_precision() -> str:
    """bf16-mixed where the GPU supports it, full fp32 on CPU (CPU bf16 autocast is slow)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    """Register the ``mypt.*`` resolvers once (idempotent)."""
    resolvers = {
        "mypt.mul": lambda a, b: int(a) * int(b),
        "mypt.cuda_available": _cuda_available,
        "mypt.default_precision": default_precision,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
