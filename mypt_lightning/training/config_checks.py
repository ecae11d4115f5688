"""The one place that checks the types and ranges of every key a run uses, before anything
is built: :func:`validate_config` names all bad keys in one line.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mypt_lightning.config  # noqa: F401  (registers the ${mypt.*} resolvers the checks resolve)
from mypt_lightning.errors import UserError

class ConfigError(UserError):
    """Config values of the wrong type or range; the message names every bad ``group.key``."""


_ABSENT = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int(low: int | None = None, optional: bool = False) -> Callable[[Any], str | None]:
    wanted = ("an integer" if low is None else f"an integer >= {low}") + (" or null" if optional else "")

    def check(value):
        if value is None and optional:
            return None
        return None if _is_int(value) and (low is None or value >= low) else wanted
    return check


def _number(low: float, high: float | None = None, low_open: bool = False,
            optional: bool = False) -> Callable[[Any], str | None]:
    if high is not None:
        wanted = f"a number in [{low:g}, {high:g}]"
    else:
        wanted = f"a number {'>' if low_open else '>='} {low:g}"
    wanted += " or null" if optional else ""

    def check(value):
        if value is None and optional:
            return None
        ok = _is_number(value) and (value > low if low_open else value >= low) and (high is None or value <= high)
        return None if ok else wanted
    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _text(what: str, optional: bool) -> Callable[[Any], str | None]:
    def check(value):
        if value is None and optional:
            return None
        return None if isinstance(value, str) and value else what + (" or null" if optional else "")
    return check


def _betas(value: Any) -> str | None:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(_is_number(b) and 0 <= b < 1 for b in value))
    return None if ok else "a list of two numbers in [0, 1), e.g. [0.9, 0.95]"


# Keys a training run reads (conf/train.yaml and its groups) and what each must hold.
# Optional keys (absent is fine) are marked with a trailing "?".
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    # run_name=2024 composes as an int and works as a directory name
    "run_name": lambda v: None if _is_int(v) else _text("a non-empty name", optional=False)(v),
    "seed": _int(),
    "init_from": _text("a path", optional=True),
    "ckpt_path": _text("a path", optional=True),
    "overwrite?": _bool,
    "train.max_steps": _int(1),
    "train.accumulate_grad_batches": _int(1),
    "train.eval_every_steps": _int(1),
    "train.checkpoint_every_steps": _int(1),
    "train.max_consecutive_nonfinite": _int(1),
    "train.export": _bool,
    "curriculum.run_gate": _bool,
    "curriculum.stop_on_gate_failure": _bool,
    "curriculum.gate_max_cases": _int(1, optional=True),
    "optim.lr": _number(0, low_open=True),
    "optim.weight_decay": _number(0),
    "optim.betas": _betas,
    "optim.eps": _number(0, low_open=True),
    "optim.warmup_steps": _int(0),
    "optim.min_lr_ratio": _number(0, 1),
    "optim.grad_clip": _number(0, optional=True),  # 0 or null: no clipping
    "data.dataset_dir": _text("a path", optional=True),
    "data.batch_size": _int(1),
    "data.block_size": _int(1),
    "data.epoch_seed": _int(),
    "data.num_workers": _int(0),
    "data.pin_memory": _bool,
    "data.max_val_samples": _int(1, optional=True),
    "data.val_batch_size?": _int(1, optional=True),
    "data.truncate?": lambda v: None if v in ("head", "tail") else "head or tail",
    "model.compile?": _bool,
    "phase.extends_context?": _bool,
    "curriculum.gate_batch_size?": _int(1, optional=True),
}


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain Python, or _ABSENT."""
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every key of ``cfg`` a run uses that has the wrong
    type or range (``train.max_steps='abc'``, ``model.n_head=5`` for n_embd 32, ...)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for spec, check in _CHECKS.items():
        key, optional = spec.rstrip("?"), spec.endswith("?")
        try:
            value = _value(cfg, key)
        except OmegaConfBaseException as exc:
            problems.append(f"{key}: cannot be resolved ({type(exc).__name__}: {str(exc).splitlines()[0]})")
            continue
        if value is _ABSENT:
            if not optional:
                problems.append(f"{key}: missing")
            continue
        values[key] = value
        wanted = check(value)
        if wanted:
            problems.append(f"{key}={_shown(value)}: expected {wanted}")
    problems += _model_problems(cfg)
    problems += _cross_problems(cfg, values)
    problems += _data_mix_problems(cfg)
    if problems:
        raise ConfigError(
            "bad config: " + "; ".join(problems)
            + ". Fix it on the command line (key=value) or in conf/ (python run.py --cfg job shows the composed config)"
        )


def _section(cfg: DictConfig, group: str) -> tuple[dict | None, str | None]:
    try:
        section = _value(cfg, group)
    except OmegaConfBaseException as exc:
        return None, f"{group}: cannot be resolved ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if not isinstance(section, dict):
        return None, f"{group}: missing or not a mapping"
    return section, None


def _model_problems(cfg: DictConfig) -> list[str]:
    from mypt_lightning.model import MyPTConfig
    from mypt_lightning.training.optim import OptimConfig
    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

    problems = []
    optim, problem = _section(cfg, "optim")
    if problem:
        problems.append(problem)
    elif set(optim) - set(OptimConfig.__dataclass_fields__):
        problems.append(f"optim: unknown key(s) {sorted(set(optim) - set(OptimConfig.__dataclass_fields__))}; "
                        f"known: {sorted(OptimConfig.__dataclass_fields__)}")
    model, problem = _section(cfg, "model")
    if problem:
        return problems + [problem]
    model.pop("compile", None)  # a training switch, not a MyPTConfig field
    known = set(MyPTConfig.__dataclass_fields__)
    if set(model) - known:
        problems.append(f"model: unknown key(s) {sorted(set(model) - known)}; known: {sorted(known)}")
    fields = {k: v for k, v in model.items() if k in known}
    bad = MyPTConfig.field_errors(fields)  # types and ranges, one rule for configs and checkpoints
    if bad:
        return problems + [f"model.{problem}" for problem in bad]
    n_embd, n_head = fields.get("n_embd", 1280), fields.get("n_head", 20)
    if n_embd % n_head or (n_embd // n_head) % 2:
        problems.append(f"model.n_head={n_head}: model.n_embd={n_embd} does not split into {n_head} heads of "
                        f"even size (n_embd / n_head = {n_embd / n_head:g}); choose an n_head that divides "
                        f"n_embd into an even head size")
    elif fields.get("vocab_size", TOKENIZER_VOCAB_SIZE) < TOKENIZER_VOCAB_SIZE:
        problems.append(f"model.vocab_size={fields['vocab_size']}: expected >= {TOKENIZER_VOCAB_SIZE} (the "
                        f"tokenizer's ids; MyPT models have 50304)")
    else:
        try:
            MyPTConfig.from_dict(fields)
        except (TypeError, ValueError) as exc:
            problems.append(f"model: {exc}")
    return problems


def _cross_problems(cfg: DictConfig, values: dict[str, Any]) -> list[str]:
    try:
        model_block = OmegaConf.select(cfg, "model.block_size", default=None)
    except OmegaConfBaseException:
        return []  # reported with the model group
    data_block = values.get("data.block_size")
    if _is_int(model_block) and _is_int(data_block) and data_block > model_block:
        # Samples longer than the model's context would fail in the middle of training.
        return [f"data.block_size={data_block}: larger than the model's context model.block_size={model_block}; "
                f"use data.block_size <= {model_block} (it defaults to model.block_size)"]
    return []


def _is_null(cfg: DictConfig, key: str) -> bool:
    try:
        return OmegaConf.select(cfg, key, default=None) is None
    except OmegaConfBaseException:
        return False  # reported by the key's own check


def _data_mix_problems(cfg: DictConfig) -> list[str]:
    try:
        mix = _value(cfg, "data.data_mix")
        eval_sets = _value(cfg, "data.eval_sets")
    except OmegaConfBaseException as exc:
        return [f"data_mix: cannot be resolved ({type(exc).__name__}: {str(exc).splitlines()[0]})"]
    problems = []
    if mix in (None, _ABSENT) and _is_null(cfg, "data.dataset_dir"):
        problems.append("data.dataset_dir: null without a data_mix; set phase.dataset_dir (or data_mix)")
    if mix not in (None, _ABSENT):
        if not isinstance(mix, list) or not mix:
            problems.append(f"data_mix.components={_shown(mix)}: expected a non-empty list of "
                            "{name, path, weight} or null")
        else:
            for i, entry in enumerate(mix):
                key = f"data_mix.components[{i}]"
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
                    problems.append(f"{key}={_shown(entry)}: expected a mapping with a 'path' (and 'name', 'weight')")
                    continue
                if "weight" in entry and (not _is_number(entry["weight"]) or entry["weight"] <= 0):
                    problems.append(f"{key}.weight={_shown(entry['weight'])}: expected a number > 0")
                if entry.get("name") is not None and not isinstance(entry["name"], str):
                    problems.append(f"{key}.name={_shown(entry['name'])}: expected a string")
    if eval_sets not in (None, _ABSENT) and not (
        isinstance(eval_sets, dict) and all(isinstance(v, str) and v for v in eval_sets.values())
    ):
        problems.append(f"data_mix.eval_sets={_shown(eval_sets)}: expected a mapping of name: dataset path")
    return problems
