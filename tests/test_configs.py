"""Every phase preset composes with the 750M model and matches docs/design.md section 5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mypt_lightning.config  # noqa: F401  (resolvers)
from mypt_lightning.model import MyPT, MyPTConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# docs/design.md section 5, written out independently of conf/phase/*.yaml.
PRESETS = {
    "phase1b_context_ext": (3e-5, 12000, 400, 4, 4, 0.05, 0, 1729),
    "phase1_format_lock": (7e-5, 2000, 100, 4, 4, 0.10, 5, 4501),
    "phase2_operators": (3e-5, 1200, 100, 4, 4, 0.08, 5, 7778),
    "phase3_chat_sft": (3e-5, 5000, 100, 4, 3, 0.12, 10, 3301),
    "phase4_multiturn": (2.5e-5, 3000, 100, 4, 2, 0.10, 10, 4401),
    "phase5_simple_toolcall": (2e-5, 3000, 100, 3, 2, 0.08, 5, 5501),
    "phase6_agentic_rag": (1.5e-5, 4000, 120, 3, 2, 0.08, 5, 6601),
}
# Cross-phase replay shares (section 8) + 5% pre-training replay.
REPLAY = {
    "phase2_operators": {"phase1_format_lock": 0.05},
    "phase3_chat_sft": {"phase1_format_lock": 0.03, "phase2_operators": 0.03},
    "phase4_multiturn": {"phase1_format_lock": 0.02, "phase2_operators": 0.02, "phase3_chat_sft": 0.03},
    "phase5_simple_toolcall": {p: 0.02 for p in list(PRESETS)[1:5]},
    "phase6_agentic_rag": {p: 0.01 for p in list(PRESETS)[1:6]},
}


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("phase", list(PRESETS))
def test_phase_preset_composes_with_750m(phase):
    cfg = compose_cfg([f"phase={phase}", "model=gpt750m"])
    lr, steps, warmup, batch, accum, dropout, neftune, seed = PRESETS[phase]
    assert cfg.phase.name == phase
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.train.max_steps == steps == cfg.trainer.max_steps
    assert cfg.optim.warmup_steps == warmup
    assert cfg.data.batch_size == batch
    assert cfg.train.accumulate_grad_batches == accum
    assert cfg.model.dropout == pytest.approx(dropout)
    assert cfg.model.neftune_alpha == neftune
    assert cfg.data.epoch_seed == seed
    assert cfg.optim.weight_decay == 0.05 and cfg.optim.grad_clip == 1.0
    assert cfg.model.block_size == 4096 and cfg.model.rope_scale == 4.0
    assert cfg.model.segment_position_reset == (phase != "phase1b_context_ext")
    expected_dir = "context_extension" if phase == "phase1b_context_ext" else f"sft_{phase}"
    assert cfg.data.dataset_dir.endswith(expected_dir)

    mix = {c.name: c.weight for c in cfg.data_mix.components}
    assert sum(mix.values()) == pytest.approx(1.0)
    for prev, share in REPLAY.get(phase, {}).items():
        assert mix[f"replay_{prev}"] == pytest.approx(share)
    if phase != "phase1b_context_ext":
        assert mix["replay_pretrain"] == pytest.approx(0.05)

    model_dict = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_dict.pop("compile") is False
    model_cfg = MyPTConfig.from_dict(model_dict)
    with torch.device("meta"):
        model = MyPT(model_cfg)
    n = model.num_parameters()
    assert 0.65e9 < n < 0.75e9, n
    assert model.blocks[0].mlp.w_gate.weight.shape == (3456, 1280)
    assert model.lm_head.weight is model.embed.weight


def test_previous_phase_chain():
    chain = [compose_cfg([f"phase={p}"]).phase.previous for p in PRESETS]
    assert chain == [None] + list(PRESETS)[:-1]


def test_trainer_groups_compose():
    for name, strategy in [("cpu", "auto"), ("gpu", "auto"), ("ddp", "ddp")]:
        cfg = compose_cfg([f"trainer={name}"])
        assert cfg.trainer.strategy == strategy
    cfg = compose_cfg(["trainer=fsdp"])
    assert cfg.trainer.strategy._target_ == "mypt_lightning.training.distributed.fsdp_strategy"
    cfg = compose_cfg(["phase=phase3_chat_sft"])
    # validation cadence counts micro-batches: eval_every_steps optimizer steps x accumulation
    assert cfg.trainer.val_check_interval == cfg.train.eval_every_steps * 3


def test_experiment_cpu_demo_composes():
    cfg = compose_cfg(["experiment=cpu_demo"])
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.model.n_layer == 4 and cfg.init_from is None
    assert cfg.data_mix.components is None
    assert list(cfg.logger) == ["csv"]


def test_slurm_launcher_config_is_submitits_and_instantiates():
    """`python run.py -m hydra/launcher=slurm ...` (docs/distributed.md): the submitit SLURM
    launcher with our resources and the time-limit signal delay the preemption logic expects."""
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.tasks_per_node, launcher.signal_delay_s) == ("gpu", 8, 120)
    # the plugin is installed (a dev dependency): the class the config names is a Hydra launcher
    assert issubclass(get_class(launcher._target_), Launcher)


# --------------------------------------------------------------------------- validate_config
@pytest.mark.parametrize("overrides", [[f"phase={p}"] for p in PRESETS] + [["experiment=cpu_demo"],
                                                                            ["experiment=cpu_phase1_gate"]])
def test_every_shipped_config_validates(overrides):
    from mypt_lightning.training.config_checks import validate_config

    validate_config(compose_cfg(overrides))


@pytest.mark.parametrize("override, named", [
    ("train.max_steps=abc", "train.max_steps='abc': expected an integer >= 1"),
    ("train.max_steps=0", "train.max_steps=0: expected an integer >= 1"),
    ("train.max_steps=-1", "train.max_steps=-1"),
    ("train.accumulate_grad_batches=0", "train.accumulate_grad_batches=0"),
    ("train.export=maybe", "train.export='maybe': expected true or false"),
    ("optim.lr=abc", "optim.lr='abc': expected a number > 0"),
    ("optim.lr=-1", "optim.lr=-1: expected a number > 0"),
    ("optim.lr=0", "optim.lr=0"),
    ("optim.betas=[0.9]", "optim.betas=[0.9]: expected a list of two numbers"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio=2: expected a number in [0, 1]"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.batch_size=2.5", "data.batch_size=2.5"),
    ("data.block_size=8192", "data.block_size=8192: larger than the model's context model.block_size=4096"),
    ("model.n_head=7", "model.n_head=7: model.n_embd=1280 does not split into 7 heads"),
    ("model.n_layer=two", "model.n_layer: expected a positive integer, got 'two'"),
    ("model.dropout=1.5", "model.dropout: expected a number in [0, 1)"),
    ("model.vocab_size=1000", "model.vocab_size=1000: expected >= 50276"),
    ("+model.n_heads=4", "model: unknown key(s) ['n_heads']"),
    ("+optim.learning_rate=1", "optim: unknown key(s) ['learning_rate']"),
    ("data.num_workers=-2", "data.num_workers=-2: expected an integer >= 0"),
    ("data.max_val_samples=0", "data.max_val_samples=0: expected an integer >= 1 or null"),
    ("data.data_mix=[{name: a}]", "data_mix.components[0]={'name': 'a'}: expected a mapping with a 'path'"),
    ("data.data_mix=[{path: x, weight: -1}]", "data_mix.components[0].weight=-1: expected a number > 0"),
    ("train.eval_every_steps=${oops}", "train.eval_every_steps: cannot be resolved"),
])
def test_validate_config_names_the_key(override, named):
    from mypt_lightning.training.config_checks import ConfigError, validate_config
    from mypt_lightning.errors import UserError

    with pytest.raises(ConfigError) as info:
        validate_config(compose_cfg([override]))
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_validate_config_lists_every_bad_key_at_once():
    from mypt_lightning.training.config_checks import ConfigError, validate_config

    with pytest.raises(ConfigError) as info:
        validate_config(compose_cfg(["train.max_steps=abc", "optim.lr=abc", "data.batch_size=0"]))
    for key in ("train.max_steps", "optim.lr", "data.batch_size"):
        assert key in str(info.value)


# --------------------------------------------------------------------------- architecture per model
# (n_layer, n_embd, n_head, block_size, rope_scale) each model option yields (docs/design.md section 3): the
# 750M model after phase 1b, the base before it, and the tiny CPU model.
ARCH = {
    "gpt750m": (32, 1280, 20, 4096, 4.0),
    "gpt750m_base": (32, 1280, 20, 1024, 1.0),
    "tiny": (2, 64, 4, 256, 1.0),
}


@pytest.mark.parametrize("model", list(ARCH))
@pytest.mark.parametrize("phase", list(PRESETS))
def test_every_phase_yields_the_model_groups_architecture(phase, model):
    """The model group owns the architecture; phase 1b alone moves the context to 4096 / 4.0."""
    cfg = compose_cfg([f"phase={phase}", f"model={model}"])
    n_layer, n_embd, n_head, block, rope = ARCH[model]
    if phase == "phase1b_context_ext":
        block, rope = 4096, 4.0
    m = cfg.model
    assert (m.n_layer, m.n_embd, m.n_head, m.block_size, m.rope_scale) == (n_layer, n_embd, n_head, block, rope)
    assert (m.vocab_size, m.bias, m.tie_weights, m.rope_theta, m.lm_head_bias) == (50304, False, True, 10000.0, False)
    # everything sized by the context follows the model: the loader's blocks and the data recipe's packing
    assert cfg.data.block_size == block and cfg.data_recipe.prepare.block_size == block
    assert cfg.phase.extends_context == (phase == "phase1b_context_ext")
    # the recipe does not depend on the model option
    lr, steps, warmup, batch, accum, dropout, neftune, seed = PRESETS[phase]
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.optim.warmup_steps, cfg.data.batch_size,
            cfg.train.accumulate_grad_batches, cfg.data.epoch_seed) == (lr, steps, warmup, batch, accum, seed)
    assert (cfg.model.dropout, cfg.model.neftune_alpha) == (pytest.approx(dropout), neftune)


def test_the_default_run_is_the_750m_model():
    for overrides in ([], ["phase=phase4_multiturn"]):
        m = compose_cfg(overrides).model
        assert (m.n_layer, m.n_embd, m.block_size, m.rope_scale) == (32, 1280, 4096, 4.0)


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "defaults":
                yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def test_phase_presets_write_the_recipe_once():
    """Each preset starts from conf/phase/_base.yaml, repeats none of its values, and sets no
    architecture field (phase 1b's block_size / rope_scale are the one exception)."""
    from mypt_lightning.model import ARCHITECTURE_FIELDS

    phase_dir = Path(CONF_DIR) / "phase"
    base = dict(_leaves(OmegaConf.to_container(OmegaConf.load(phase_dir / "_base.yaml"))))
    assert sorted(p.stem for p in phase_dir.glob("[!_]*.yaml")) == sorted(PRESETS)
    for phase in PRESETS:
        raw = OmegaConf.to_container(OmegaConf.load(phase_dir / f"{phase}.yaml"))
        assert raw["defaults"] == ["_base", "_self_"], phase
        own = dict(_leaves(raw))
        repeated = {k: v for k, v in own.items() if k in base and base[k] == v}
        assert not repeated, (phase, repeated)
        arch = {k for k in own if k.startswith("model.")
                and k.split(".", 1)[1] in (*ARCHITECTURE_FIELDS, "block_size", "rope_scale", "rope_theta", "norm_eps")}
        assert arch == ({"model.block_size", "model.rope_scale"} if phase == "phase1b_context_ext" else set()), phase


def test_experiments_do_not_reset_what_the_model_group_sets():
    """conf/experiment/*.yaml only write model fields that differ from their model option."""
    for path in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        model_option = next(d["override /model"] for d in raw["defaults"] if isinstance(d, dict) and "override /model" in d)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            plain = compose(config_name="train", overrides=[f"model={model_option}"]).model
        resets = {k: v for k, v in raw["model"].items() if k in ("block_size", "rope_scale") and plain[k] == v}
        assert not resets, (path.name, resets)
