"""The OmegaConf resolvers that ``conf/`` uses (``${mypt.*}``), registered on import.

What the composed keys may hold is checked by
:func:`mypt_lightning.training.config_checks.validate_config`.

>>> from omegaconf import OmegaConf
>>> register_resolvers()
>>> OmegaConf.create({"a": "${mypt.mul:3,4}"}).a
12
"""

from __future__ import annotations

import math
import os
import re

from omegaconf import OmegaConf


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_precision() -> str:
    """bf16-mixed where the GPU supports it, else full fp32.

    CPUs get fp32 even where bf16 is faster (with AMX, docs/benchmarks.md "Train step"): on CPUs
    without bf16 matmul units (AMX, AVX512-BF16) bf16 autocast is slower than fp32, and the CPU
    recipes' gate results were measured in fp32. ``trainer.precision=bf16-mixed`` opts in.
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


# ---------------------------------------------------------------- sweep job names
# A multirun's jobs are named after what the sweep varies: `python run.py -m phase=phase3_chat_sft
# optim.lr=3e-5,1e-4 model.neftune_alpha=0,5` gives phase3_chat_sft-lr3e-5-neft0, ... (run name,
# W&B run name, job directory <n>_phase3_chat_sft-lr3e-5-neft0). Single runs keep their name.
SWEEP_KEYS_ENV = "MYPT_SWEEP_KEYS"  # the swept keys, set by SweepNames for the jobs of this multirun
SHORT_KEYS = {
    "optim.lr": "lr", "model.neftune_alpha": "neft", "optim.weight_decay": "wd", "optim.warmup_steps": "warmup",
    "optim.min_lr_ratio": "minlr", "optim.grad_clip": "clip", "model.dropout": "drop", "train.max_steps": "steps",
    "train.accumulate_grad_batches": "accum", "data.batch_size": "bs", "seed": "seed",
    # config groups: the option's name says it all
    "experiment": "", "model": "", "data_mix": "", "data_recipe": "", "trainer": "", "phase": "",
}


def _compact(text: str) -> str:
    """A number as short as it reads: 0.001 -> 1e-3, 3e-05 -> 3e-5, 0.05 -> 0.05; other text unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    if text.lstrip("+-").isdigit() or not math.isfinite(number):
        return text
    if number != 0 and abs(number) < 1e-2:
        mantissa, exponent = f"{number:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{number:g}"


def sweep_suffix(base: str, job_overrides: list[str], swept: list[str]) -> str:
    """``-lr3e-5-neft5`` for a job whose overrides hold ``optim.lr=3e-5 model.neftune_alpha=5``
    when those keys are ``swept``; a value already in ``base`` (the phase of a curriculum) is left out.

    >>> sweep_suffix("phase3_chat_sft", ["optim.lr=3e-05", "model.neftune_alpha=5", "model=tiny"],
    ...              ["optim.lr", "model.neftune_alpha"])
    '-lr3e-5-neft5'
    """
    values = {}
    for override in job_overrides:
        key, sep, value = override.partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    parts = []
    for key in swept:
        if key not in values:
            continue
        value = re.sub(r"[^A-Za-z0-9.+-]+", "_", _compact(values[key].rstrip("/").rsplit("/", 1)[-1])).strip("_")
        if not value or value in base:
            continue
        short = SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])
        parts.append(f"{short}{value}")
    return "".join(f"-{p}" for p in parts)


def sweep_name(base: str) -> str:
    """``base`` plus the job's swept values in a multirun job (see :func:`sweep_suffix`), else ``base``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return base
    if not HydraConfig.initialized():
        return base
    hydra_cfg = HydraConfig.get()
    swept = [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]
    if hydra_cfg.mode != RunMode.MULTIRUN or not swept:
        return base
    return base + sweep_suffix(base, list(hydra_cfg.overrides.task), swept)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepNames(_HydraCallback):
    """Hydra callback (``conf/hydra/default.yaml``): before a multirun's jobs start, note which
    keys the sweep varies (command-line sweeps and ``hydra.sweeper.params``) in the environment,
    where every job (also one a launcher starts in another process) reads it back."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        keys += [k for k in params if k not in keys]
        os.environ[SWEEP_KEYS_ENV] = ",".join(keys)

    def on_multirun_end(self, config, **kwargs) -> None:
        os.environ.pop(SWEEP_KEYS_ENV, None)


def register_resolvers() -> None:
    """Register the ``mypt.*`` resolvers once (idempotent)."""
    resolvers = {
        "mypt.mul": lambda a, b: int(a) * int(b),
        "mypt.cuda_available": _cuda_available,
        "mypt.default_precision": default_precision,
        "mypt.sweep_name": sweep_name,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
