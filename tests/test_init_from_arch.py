"""init_from and the architecture: what a run may set differently from the weights it starts from.

* block_size / rope_scale (not weights): the config's values, said in one line; a rope_scale
  change outside phase 1b (phase.extends_context) is also warned about;
* lm_head_bias: taken from the checkpoint, so a legacy MyPT base (whose head has a bias) starts
  a phase with no extra flag, and the run resumes;
* any other architecture field: the ArchitectureMismatchError naming it, before anything is written.

The checkpoints are real files: a legacy MyPT folder as tests/test_legacy_compat.py builds it
(checked against that file's independent reference forward), and our own export.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import lightning as L
import pytest
import torch

from mypt_lightning import load_model
from mypt_lightning.weights.checkpoint import (
    ArchitectureMismatchError,
    fit_config_to_checkpoint,
    load_weights,
    read_config,
    save_exported,
)
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.training.train import fit_model_to_checkpoint, train
from test_checkpoint import tiny_model, write_lightning, write_sharded
from test_legacy_compat import D, H, IDS, L as LAYERS, legacy_config, legacy_state_dict, reference_logits, write_folder
from helpers import BLOCK, write_packed_dataset
from helpers import ROOT, StepLosses, SimulatedCrash, compose_cfg, tiny_overrides


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_packed_dataset(tmp_path_factory.mktemp("data") / "sft_tiny", {"train": 24, "val": 4})


@pytest.fixture(scope="module")
def legacy_base(tmp_path_factory):
    """A legacy MyPT base in the shape of the real one: tied head plus its bias, rope_scale 1.0."""
    cfg = legacy_config(tie_weights=True, block_size=BLOCK, rope_scale=1.0)
    sd = legacy_state_dict(cfg, seed=3)
    return write_folder(tmp_path_factory.mktemp("legacy") / "mypt_base", cfg, sd), cfg, sd


def legacy_run(dataset, out, base, **extra):
    """Overrides of a tiny phase-1 run at the legacy base's width (no lm_head_bias among them)."""
    return tiny_overrides(dataset, out, init_from=str(base), **{
        "model.n_embd": D, "model.n_head": H, "model.n_layer": LAYERS, "train.max_steps": 6,
        "data.num_workers": 0, **extra})


class LogitsAtStart(L.Callback):
    """The model's logits (eval mode) when training starts: the loaded init weights."""

    def on_train_start(self, trainer, pl_module):
        model = pl_module.model
        was_training = model.training
        with torch.no_grad():
            self.logits = model.eval()(IDS[:, :32]).double()
        model.train(was_training)


def test_legacy_base_starts_phase1_with_no_flag_and_resumes(dataset, legacy_base, tmp_path, capsys):
    base, legacy_cfg, legacy_sd = legacy_base
    out = tmp_path / "runs" / "phase1_format_lock"
    start, killed = LogitsAtStart(), StepLosses(crash_after_step=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # same rope_scale: nothing to warn about
        warnings.filterwarnings("ignore", message=r"(?!.*rope_scale)")  # Lightning's own
        with pytest.raises(SimulatedCrash):
            train(compose_cfg(legacy_run(dataset, out, base)), extra_callbacks=[start, killed])
    said = capsys.readouterr().out
    assert f"[mypt] init_from={base}: the model config differs from the checkpoint's " \
           "(taken from the checkpoint: lm_head_bias=True)" in said
    # the weights trained are the legacy weights, by the independent legacy forward
    torch.testing.assert_close(start.logits, reference_logits(legacy_cfg, legacy_sd, IDS[:, :32]),
                               atol=2e-4, rtol=1e-4)

    resumed = StepLosses()
    train(compose_cfg(legacy_run(dataset, out, base, ckpt_path="last")), extra_callbacks=[resumed])
    assert sorted(resumed.losses) == [4, 5, 6]
    assert "[mypt] ckpt_path=" in capsys.readouterr().out
    exported = load_model(out / "export")
    assert exported.config.lm_head_bias and exported.config.tie_weights
    assert not torch.equal(exported.lm_head.bias, legacy_sd["lm_head.bias"])  # trained, not dropped


def _fit(dataset, tmp_path, checkpoint, phase="phase1_format_lock", **extra):
    cfg = compose_cfg(tiny_overrides(dataset, tmp_path / "run", phase=phase, **extra))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_model_to_checkpoint(cfg, str(checkpoint))
    return cfg, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.fixture(scope="module")
def export_64(tmp_path_factory):
    """Our export of a tiny model at block 64, rope_scale 1.0, no head bias."""
    return save_exported(MyPT(MyPTConfig.tiny(n_embd=32, n_head=2, block_size=BLOCK)),
                         tmp_path_factory.mktemp("export") / "export")


def test_block_size_and_rope_scale_may_differ_and_are_said(dataset, export_64, tmp_path, capsys):
    cfg, warned = _fit(dataset, tmp_path, export_64, **{"model.block_size": 128})
    line = capsys.readouterr().out.strip()
    assert line == (f"[mypt] init_from={export_64}: the model config differs from the checkpoint's "
                    "(not weights, the config's values used: block_size 64 -> 128)")
    assert cfg.model.block_size == 128 and cfg.model.lm_head_bias is False and not warned

    _fit(dataset, tmp_path, export_64)  # nothing differs: nothing said
    assert capsys.readouterr().out == ""


def test_rope_scale_change_is_warned_outside_phase_1b(dataset, export_64, tmp_path, capsys):
    _, warned = _fit(dataset, tmp_path, export_64, **{"model.rope_scale": 4.0})
    assert "rope_scale 1.0 -> 4.0" in capsys.readouterr().out
    assert len(warned) == 1
    assert "rope_scale changes 1.0 -> 4.0 in phase1_format_lock" in warned[0]
    assert "model.rope_scale=1.0" in warned[0]

    # phase 1b is the context extension: the same change is said, not warned about
    _, warned = _fit(dataset, tmp_path, export_64, phase="phase1b_context_ext", **{"model.rope_scale": 4.0})
    assert "rope_scale 1.0 -> 4.0" in capsys.readouterr().out and warned == []


def test_the_750m_phase_1b_from_the_legacy_base_is_said_not_warned(dataset, legacy_base, tmp_path, capsys):
    """phase=phase1b_context_ext with the base's fields: 64 -> 4096, rope 1.0 -> 4.0, head bias taken."""
    base, _, _ = legacy_base
    cfg, warned = _fit(dataset, tmp_path, base, phase="phase1b_context_ext",
                       **{"model.n_embd": D, "model.n_head": H, "model.block_size": 4096, "model.rope_scale": 4.0})
    assert capsys.readouterr().out.strip().endswith(
        "(not weights, the config's values used: block_size 64 -> 4096, rope_scale 1.0 -> 4.0; "
        "taken from the checkpoint: lm_head_bias=True)")
    assert warned == [] and cfg.model.lm_head_bias is True


@pytest.mark.parametrize("field, value, found", [
    ("n_layer", 3, 2), ("n_embd", 128, 64), ("n_head", 8, 4), ("tie_weights", False, True),
    ("mlp_hidden", 256, 192), ("bias", True, False), ("vocab_size", 50432, 50304),
])
def test_every_other_difference_is_the_mismatch_error(legacy_base, field, value, found):
    base, _, _ = legacy_base
    wanted = MyPTConfig.tiny(**{"n_embd": D, "n_head": H, field: value})
    with pytest.raises(ArchitectureMismatchError) as info:
        fit_config_to_checkpoint(read_config(base), wanted, f"init_from={base}")
    assert f"{field}: checkpoint has {found!r}, expected {value!r}" in str(info.value)
    assert "lm_head_bias" not in str(info.value)  # that one is taken, never a mismatch


def test_run_py_mismatch_is_one_line_before_anything_is_written(dataset, legacy_base, tmp_path):
    base, _, _ = legacy_base
    out = tmp_path / "runs" / "phase1_format_lock"
    result = subprocess.run([sys.executable, "run.py", *legacy_run(dataset, out, base, **{"model.n_layer": 3})],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"error: init_from={base}: architecture mismatch in 1 field(s): "
                         "n_layer: checkpoint has 2, expected 3")
    assert "Traceback" not in result.stderr
    assert not (out / "run_info.json").exists() and not (out / "checkpoints").exists()


def test_read_config_is_the_loaders_config_in_every_format(tmp_path, legacy_base):
    model = tiny_model(rope_scale=4.0, block_size=128, lm_head_bias=True)
    paths = [
        write_lightning(tmp_path / "a.ckpt", model),
        write_sharded(tmp_path / "b.ckpt", model),
        save_exported(model, tmp_path / "export"),
        legacy_base[0],
    ]
    for path in paths:
        assert read_config(path) == load_weights(path)[1], path
    assert read_config(paths[0]) == model.config
    legacy = read_config(legacy_base[0])
    assert (legacy.lm_head_bias, legacy.tie_weights, legacy.block_size, legacy.n_layer) == (True, True, BLOCK, 2)
    assert json.loads((paths[2] / "config.json").read_text())["model"]["rope_scale"] == 4.0
