"""A phase's recipe: the training config tree it is composed in, and the sources of
``conf/data_recipe/<phase>.yaml`` checked (kinds, allowed keys, known generators)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mypt_lightning.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"
GENERATOR_TOOLS = {  # generator module -> its command-line wrapper in tools/
    "format_lock": "generate_format_lock_dataset.py", "echo": "generate_echo_dataset.py",
    "operators": "generate_operator_dataset.py", "rag_chat": "generate_rag_chat_sft.py",
    "multiturn": "generate_multiturn_sft.py", "agent": "generate_agent_sft.py",
    "tool_episodes": "generate_sft_tool_episodes.py", "pretrain_replay": "generate_pretrain_replay.py",
    "context_extension": "build_context_extension_dataset.py",
}
SOURCE_KEYS = {"kind", "enabled", "share", "generator", "dataset", "path", "args", "num_examples",
               "tokens_per_episode", "held_out_val"}
HF_ARGS = {"languages", "layout", "split", "config", "min_turns", "system_prompt", "drop_tool_definitions"}


def compose_config(overrides: list[str] = (), config_dir: str | Path = CONF_DIR):
    """The training config tree (``conf/train.yaml``) with command-line ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import mypt_lightning.config  # noqa: F401  (registers the mypt.* resolvers)

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"config: {str(exc).splitlines()[0]}") from None


def to_container(node) -> Any:
    """``node`` as plain dicts and lists, interpolations resolved; a config error is a UserError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise UserError(f"config: {str(exc).splitlines()[0]}") from None


@dataclass
class Source:
    name: str
    kind: str  # generator | pretrain_text | hf | jsonl
    share: float
    generator: str | None = None
    dataset: str | None = None
    path: str | None = None
    args: dict = field(default_factory=dict)
    num_examples: int | None = None
    tokens_per_episode: float | None = None
    held_out_val: bool = False


def parse_sources(recipe: dict, where: str) -> list[Source]:
    """The enabled sources of a recipe, checked (typos in keys are errors, not ignored)."""
    sources = []
    for name, spec in (recipe.get("sources") or {}).items():
        if spec is None or not spec.get("enabled", True):
            continue
        unknown = sorted(set(spec) - SOURCE_KEYS)
        if unknown:
            raise UserError(f"{where}.sources.{name}: unknown key(s) {unknown}; allowed: {sorted(SOURCE_KEYS)}")
        kind = spec.get("kind", "generator")
        src = Source(name, kind, float(spec.get("share", 1.0)), spec.get("generator"), spec.get("dataset"),
                     spec.get("path"), dict(spec.get("args") or {}), spec.get("num_examples"),
                     spec.get("tokens_per_episode"), bool(spec.get("held_out_val", False)))
        need = {"generator": "generator", "hf": "dataset", "jsonl": "path", "pretrain_text": None}
        if kind not in need:
            raise UserError(f"{where}.sources.{name}: kind must be one of {sorted(need)}, got {kind!r}")
        if need[kind] and not getattr(src, need[kind]):
            raise UserError(f"{where}.sources.{name}: kind {kind} needs '{need[kind]}'")
        if kind == "generator" and src.generator not in GENERATOR_TOOLS:
            raise UserError(f"{where}.sources.{name}: unknown generator {src.generator!r}; "
                            f"one of {sorted(GENERATOR_TOOLS)}")
        if not src.share > 0:
            raise UserError(f"{where}.sources.{name}: share must be > 0, got {src.share}")
        sources.append(src)
    if not sources:
        raise UserError(f"{where}: no enabled source")
    return sources
