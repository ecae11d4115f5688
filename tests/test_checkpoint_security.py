"""No checkpoint can run code: a pickle whose __reduce__ calls os.system is refused with one
line naming the file and the refused global, through every loader and entry point; a config
with wrong types names the file and the field."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mypt_lightning.weights.checkpoint import CheckpointError, check_loadable, check_resumable, load_model, save_exported
from test_checkpoint import tiny_model, write_legacy, write_lightning, write_sharded
from helpers import write_packed_dataset
from helpers import ROOT, compose_cfg, tiny_overrides


class RunsCode:
    """Unpickling this runs ``touch SENTINEL`` (what an attacker's checkpoint would do)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture
def sentinel(tmp_path) -> Path:
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "the checkpoint's code ran"


def malicious_ckpt(path: Path, sentinel: Path) -> Path:
    model = tiny_model()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "mypt_model_config": model.config.to_dict(), "callbacks": {"x": RunsCode(sentinel)}}, path)
    return path


def malicious_sharded_meta(path: Path, sentinel: Path) -> Path:
    model = tiny_model()
    write_sharded(path, model)
    torch.save({"mypt_model_config": model.config.to_dict(), "loops": RunsCode(sentinel)}, path / "meta.pt")
    return path


def malicious_sharded_metadata(path: Path, sentinel: Path) -> Path:
    write_sharded(path, tiny_model())
    (path / ".metadata").write_bytes(pickle.dumps(RunsCode(sentinel)))  # DCP reads it with plain pickle
    return path


def malicious_legacy(path: Path, sentinel: Path) -> Path:
    write_legacy(path, tiny_model())
    torch.save({"model": RunsCode(sentinel)}, path / "model.pt")
    return path


MALICIOUS = {  # name -> (writer, the file the error must name)
    "ckpt": (malicious_ckpt, lambda p: p),
    "sharded meta.pt": (malicious_sharded_meta, lambda p: p / "meta.pt"),
    "sharded .metadata": (malicious_sharded_metadata, lambda p: p / ".metadata"),
    "legacy model.pt": (malicious_legacy, lambda p: p / "model.pt"),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_load_model_refuses_pickled_code_naming_the_file(tmp_path, sentinel, kind):
    write, named = MALICIOUS[kind]
    path = write(tmp_path / "evil.ckpt", sentinel)
    for loader in (load_model, check_loadable):
        with pytest.raises(CheckpointError) as info:
            loader(path)
        message = str(info.value)
        assert message.startswith(f"{named(path)}: refused: "), message
        assert "refused global posix.system" in message and "could run code" in message
        assert "\n" not in message


def test_code_in_a_sharded_folders_distcp_item_is_refused_before_resume(tmp_path, sentinel):
    """DCP unpickles non-tensor items (the optimizer's param_groups) with weights_only=False
    when Lightning resumes a sharded checkpoint: the check reads each with weights_only=True."""
    import torch.distributed.checkpoint as dcp

    model = tiny_model()
    path = tmp_path / "last.ckpt"
    dcp.save({"model": {f"model.{k}": v for k, v in model.state_dict().items()},
              "optimizer_0": {"param_groups": {"0": {"lr": RunsCode(sentinel)}}}}, checkpoint_id=str(path))
    torch.save({"global_step": 3, "mypt_model_config": model.config.to_dict()}, path / "meta.pt")
    with pytest.raises(CheckpointError) as info:
        check_resumable(path)
    assert str(info.value).startswith(f"{path / '__0_0.distcp'} (item 'optimizer_0.param_groups.0.lr'): refused")
    assert "refused global posix.system" in str(info.value)
    # load_model reads only the weights (tensors, loaded with weights_only=True by DCP itself)
    torch.testing.assert_close(load_model(path).embed.weight, model.embed.weight)


def test_our_own_checkpoints_pass_the_check(tmp_path):
    model = tiny_model()
    assert check_loadable(write_lightning(tmp_path / "a.ckpt", model)) == "lightning"
    assert check_loadable(write_sharded(tmp_path / "b.ckpt", model)) == "lightning-sharded"
    assert check_loadable(write_legacy(tmp_path / "legacy", model)) == "legacy"
    assert check_loadable(save_exported(model, tmp_path / "export")) == "exported"
    check_resumable(tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match=r"is an exported model folder \(weights only\).*init_from="):
        check_resumable(tmp_path / "export")


def test_damaged_file_is_not_called_malicious(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint") as info:
        check_loadable(tmp_path / "junk.ckpt")
    assert "refused" not in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- entry points


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "Warning" not in ln and not ln.startswith("  ")]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_generate_cli_refuses_a_malicious_checkpoint(tmp_path, sentinel):
    path = malicious_ckpt(tmp_path / "evil.ckpt", sentinel)
    proc = subprocess.run([sys.executable, "tools/generate.py", "--model", str(path), "--prompt", "hi"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert one_line_error(proc.stderr).startswith(f"generate.py: error: {path}: refused: ")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from data_modules.atomic_write import write_json
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    path = write_packed_dataset(tmp_path_factory.mktemp("data") / "sft_tiny", {"train": 8, "val": 2})
    if not (path / "tokenizer_state.json").exists():  # training refuses a dataset that does not name its tokenizer
        write_json(path / "tokenizer_state.json", get_tokenizer().state_dict())
    return path


@pytest.mark.parametrize("option,write,named", [
    ("ckpt_path", malicious_ckpt, lambda p: p),
    ("init_from", malicious_sharded_meta, lambda p: p / "meta.pt"),
])
def test_run_py_refuses_a_malicious_checkpoint_before_writing_anything(tmp_path, sentinel, dataset, option, write,
                                                                        named):
    path = write(tmp_path / "evil.ckpt", sentinel)
    out = tmp_path / "run"
    overrides = tiny_overrides(dataset, out, **{option: str(path), "hydra.run.dir": str(tmp_path / "hydra"),
                                                "data.num_workers": 0})
    proc = subprocess.run([sys.executable, "run.py", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert one_line_error(proc.stderr).startswith(f"error: {named(path)}: refused: ")
    assert not out.exists()


def test_lightning_resume_itself_runs_with_weights_only(tmp_path, sentinel, dataset, monkeypatch):
    """Defence in depth: with the up-front checks skipped, Lightning's own load still refuses."""
    import mypt_lightning.training.train as train_mod

    monkeypatch.setattr(train_mod, "check_resumable", lambda *a, **k: None)
    monkeypatch.setattr(train_mod, "fit_model_to_checkpoint", lambda *a, **k: None)  # reads it through our loader too
    path = malicious_ckpt(tmp_path / "evil.ckpt", sentinel)
    cfg = compose_cfg(tiny_overrides(dataset, tmp_path / "run", ckpt_path=str(path), **{"data.num_workers": 0}))
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        train_mod.train(cfg)


# ----------------------------------------------------------------------------- config types

BAD_VALUES = [("n_layer", "two"), ("block_size", -5), ("n_embd", 12.5), ("rope_scale", "x"), ("n_head", None),
              ("n_layer", [2]), ("tie_weights", "yes")]


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_exported_config_with_wrong_types_names_file_and_field(tmp_path, field, value):
    path = save_exported(tiny_model(), tmp_path / "export")
    meta = json.loads((path / "config.json").read_text())
    meta["model"][field] = value
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path / 'config.json'} ['model']: bad model config: {field}: expected ")


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_legacy_config_with_wrong_types_names_file_and_field(tmp_path, field, value):
    path = write_legacy(tmp_path / "legacy", tiny_model())
    raw = json.loads((path / "config.json").read_text())
    raw[field] = value
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path / 'config.json'}: bad model config: {field}: expected ")


def test_lightning_stored_config_with_wrong_types_names_file_and_field(tmp_path):
    model = tiny_model()
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "mypt_model_config": {**model.config.to_dict(), "n_head": "four", "rope_theta": -1.0}}, path)
    with pytest.raises(CheckpointError, match=r"x\.ckpt \['mypt_model_config'\]: bad model config: "
                                              r"n_head: expected a positive integer, got 'four'; "
                                              r"rope_theta: expected a positive number, got -1\.0$"):
        load_model(path)


def test_absurd_or_hostile_config_fails_fast_and_named(tmp_path):
    path = save_exported(tiny_model(), tmp_path / "export")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["n_layer"] = 10 ** 9  # would take hours to build, even on the meta device
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="says n_layer=1000000000 but the weights have 2 blocks"):
        load_model(path)
    (path / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match=r"config\.json: cannot read JSON"):
        load_model(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_posing_as_a_checkpoint_is_refused_quietly(tmp_path, sentinel, protocol):
    """A bare pickle.dumps (not torch.save) of code: refused, its code not run, and torch's
    "Detected pickle protocol" warning does not precede the one-line error."""
    import warnings

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": RunsCode(sentinel)}, protocol=protocol))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=str(path)):
            check_loadable(path)
    assert [str(w.message) for w in caught] == []
