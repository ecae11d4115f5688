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
