"""Checkpoint formats: round trips (Lightning, exported, legacy MyPT), architecture checks,
and one clear CheckpointError per problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mypt_lightning.weights import checkpoint as ckpt_mod
from mypt_lightning.weights.checkpoint import (
    ArchitectureMismatchError,
    CheckpointError,
    check_architecture,
    load_model,
    load_weights,
    save_exported,
)
from mypt_lightning.model import ARCHITECTURE_FIELDS, MyPT, MyPTConfig

torch.set_num_threads(2)
IDS = torch.randint(0, 50304, (2, 24), generator=torch.Generator().manual_seed(3))


def tiny_model(**overrides) -> MyPT:
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(**overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)  # nothing left at its init value
    return model.eval()


def logits(model):
    with torch.no_grad():
        return model.eval()(IDS)


def write_lightning(path: Path, model: MyPT, prefix: str = "model.") -> Path:
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    sd["loss_fn.weight"] = torch.ones(3)  # other prefixes are ignored
    torch.save({"state_dict": sd, "mypt_model_config": model.config.to_dict(), "epoch": 1,
                "optimizer_states": [{}], "global_step": 7}, path)
    return path


LEGACY_NAMES = {"embed": "token_embedding_table", "attn.qkv": "sa.qkv", "attn.proj": "sa.proj",
                "mlp.w_": "fwd.w_", "attn_norm": "ln1", "mlp_norm": "ln2", "norm_f": "ln_f"}


def write_legacy(path: Path, model: MyPT, wrap: str | None = "model", prefix: str = "_orig_mod.",
                 dtype=torch.bfloat16, **config_extra) -> Path:
    """A legacy MyPT folder in the legacy names: tied lm_head.weight stored too, plus its bias."""
    path.mkdir(parents=True)
    sd = {}
    for k, v in model.state_dict().items():
        for ours, theirs in LEGACY_NAMES.items():
            k = k.replace(ours, theirs)
        sd[prefix + k] = v.clone().to(dtype)
    torch.save({wrap: sd, "iter_num": 1000} if wrap else sd, path / "model.pt")
    c = model.config
    config = {"vocab_size": c.vocab_size, "n_embd": c.n_embd, "n_head": c.n_head, "n_layer": c.n_layer,
              "block_size": 1024, "bias": False, "dropout": 0.1, "pos_encoding": "rope", "mlp_type": "swiglu",
              "norm_type": "rmsnorm", "rope_theta": 10000.0, "learning_rate": 3e-4, "batch_size": 12,
              "max_iters": 60000, "weight_decay": 0.1, "grad_clip": 1.0, "use_amp": True, **config_extra}
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    return path


# ----------------------------------------------------------------------------- round trips


def test_exported_round_trip(tmp_path):
    model = tiny_model(rope_scale=4.0)
    out = save_exported(model, tmp_path / "export", extra={"phase": "phase3_chat_sft"})
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "mypt-lightning" and meta["format_version"] == 1
    assert meta["model"] == model.config.to_dict() and meta["extra"] == {"phase": "phase3_chat_sft"}
    from safetensors.torch import load_file

    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # tied: stored once
    loaded = load_model(out)
    assert loaded.config == model.config and not loaded.training
    assert loaded.lm_head.weight is loaded.embed.weight
    assert torch.equal(logits(loaded), logits(model))
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp folder left behind


def test_save_exported_replaces_previous_export_only(tmp_path):
    save_exported(tiny_model(), tmp_path / "out")
    save_exported(tiny_model(rope_scale=2.0), tmp_path / "out")
    assert load_model(tmp_path / "out").config.rope_scale == 2.0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_exported(tiny_model(), tmp_path / "other")


def test_save_exported_never_leaves_half_written_folder(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_exported(tiny_model(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix", ["model.", "model._orig_mod."])
def test_lightning_round_trip(tmp_path, prefix):
    model = tiny_model()
    path = write_lightning(tmp_path / "last.ckpt", model, prefix)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert torch.equal(logits(loaded), logits(model))


def test_legacy_import_keeps_bias(tmp_path):
    ref = tiny_model(lm_head_bias=True)
    with torch.no_grad():
        ref.lm_head.bias.copy_(torch.randn(ref.config.vocab_size))
        for p in ref.parameters():  # the legacy file is bf16: compare against bf16-rounded weights
            p.copy_(p.to(torch.bfloat16).float())
    path = write_legacy(tmp_path / "legacy", ref)
    loaded = load_model(path)
    c = loaded.config
    assert c.lm_head_bias and c.tie_weights and c.block_size == 1024 and c.dropout == 0.0
    assert (c.n_embd, c.n_head, c.n_layer, c.hidden_dim) == (64, 4, 2, 192)
    assert loaded.lm_head.weight is loaded.embed.weight
    assert loaded.embed.weight.dtype == torch.float32
    torch.testing.assert_close(logits(loaded), logits(ref), rtol=1e-6, atol=1e-6)
    sd, _ = load_weights(path)
    torch.testing.assert_close(sd["lm_head.bias"], ref.lm_head.bias)


@pytest.mark.parametrize("wrap,prefix", [(None, ""), ("state_dict", "module."), ("model", "")])
def test_legacy_wrappers(tmp_path, wrap, prefix):
    ref = tiny_model()
    loaded = load_model(write_legacy(tmp_path / "legacy", ref, wrap=wrap, prefix=prefix, dtype=torch.float32))
    assert not loaded.config.lm_head_bias
    assert torch.equal(logits(loaded), logits(ref))


def test_load_weights_for_init_from(tmp_path):
    model = tiny_model()
    sd, config = load_weights(save_exported(model, tmp_path / "e"))
    assert sd["lm_head.weight"] is sd["embed.weight"] and config == model.config
    fresh = MyPT(config)
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(logits(fresh), logits(model))


def test_config_overrides(tmp_path):
    path = save_exported(tiny_model(), tmp_path / "e")
    assert load_model(path, config_overrides={"rope_scale": 4.0, "dropout": 0.1}).config.rope_scale == 4.0
    with pytest.raises(ArchitectureMismatchError, match=r"\['n_layer'\]"):
        load_model(path, config_overrides={"n_layer": 3})
    with pytest.raises(CheckpointError, match="unknown MyPTConfig field"):
        load_model(path, config_overrides={"n_layers": 3})


# ----------------------------------------------------------------------------- architecture


def test_mismatch_names_every_differing_field():
    found = MyPTConfig.tiny()
    expected = MyPTConfig.tiny(vocab_size=50432, n_embd=128, n_head=8, n_layer=3, bias=True, tie_weights=False,
                               mlp_hidden=256, lm_head_bias=True,
                               rope_scale=4.0, block_size=4096, dropout=0.1, neftune_alpha=5.0)  # not architecture
    with pytest.raises(ArchitectureMismatchError) as exc:
        check_architecture(found, expected, "some/ckpt")
    msg = str(exc.value)
    assert "some/ckpt" in msg and "8 field(s)" in msg
    for field in ARCHITECTURE_FIELDS:
        assert f"{field}: checkpoint has {getattr(found, field) if field != 'mlp_hidden' else 192!r}" in msg
    for field in ("rope_scale", "block_size", "dropout", "neftune"):
        assert field not in msg
    check_architecture(MyPTConfig(), MyPTConfig(mlp_hidden=3456, rope_scale=4.0), "x")  # resolved: equal


def test_expected_config_is_checked(tmp_path):
    path = save_exported(tiny_model(), tmp_path / "e")
    with pytest.raises(ArchitectureMismatchError, match=r"n_layer: checkpoint has 2, expected 32"):
        load_model(path, expected_config=MyPTConfig.gpt750m())
    load_model(path, expected_config=MyPTConfig.tiny(rope_scale=4.0, block_size=64))


# ----------------------------------------------------------------------------- errors


def _err(path, match):
    with pytest.raises(CheckpointError, match=match) as exc:
        load_model(path)
    assert str(path) in str(exc.value)


def test_error_nonexistent_and_unknown_directory(tmp_path):
    _err(tmp_path / "nope", "does not exist; expected a Lightning checkpoint file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "weights.bin").write_bytes(b"")
    _err(tmp_path / "d", r"none of the known formats \(it holds \['weights.bin'\]\).*model.safetensors")


def test_error_lightning_files(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle at all")
    _err(tmp_path / "junk.ckpt", "not a readable torch checkpoint")
    torch.save({"epoch": 1}, tmp_path / "a.ckpt")
    _err(tmp_path / "a.ckpt", "no 'state_dict'")
    torch.save({"state_dict": {}}, tmp_path / "b.ckpt")
    _err(tmp_path / "b.ckpt", "no 'mypt_model_config'")
    torch.save({"state_dict": {"x.y": torch.ones(1)}, "mypt_model_config": MyPTConfig.tiny().to_dict()},
               tmp_path / "c.ckpt")
    _err(tmp_path / "c.ckpt", "no keys starting with 'model.'")
    torch.save({"state_dict": {}, "mypt_model_config": {"n_embd": 64, "colour": "red"}}, tmp_path / "d.ckpt")
    _err(tmp_path / "d.ckpt", r"bad model config: unknown MyPTConfig field\(s\): \['colour'\]")


def test_error_missing_unexpected_and_shape(tmp_path):
    model = tiny_model()
    sd = {"model." + k: v for k, v in model.state_dict().items() if "blocks.1.mlp.w_up" not in k}
    sd["model.blocks.0.attn.rotary.inv_freq"] = torch.ones(2)
    torch.save({"state_dict": sd, "mypt_model_config": model.config.to_dict()}, tmp_path / "x.ckpt")
    _err(tmp_path / "x.ckpt", re.escape("missing keys: ['blocks.1.mlp.w_up.weight']; unexpected keys: "
                                        "['blocks.0.attn.rotary.inv_freq']"))
    bigger = tiny_model(mlp_hidden=256)
    write_lightning(tmp_path / "y.ckpt", bigger)
    data = torch.load(tmp_path / "y.ckpt", weights_only=True)
    data["mypt_model_config"]["mlp_hidden"] = None
    torch.save(data, tmp_path / "y.ckpt")
    _err(tmp_path / "y.ckpt", r"shape mismatch: \['blocks.0.mlp.w_down.weight: \(64, 256\) != \(64, 192\)'")


def test_error_exported_folder(tmp_path):
    path = save_exported(tiny_model(), tmp_path / "e")
    meta = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**meta, "format_version": 2}))
    _err(path, "format_version 2 is not supported")
    (path / "config.json").write_text(json.dumps({**meta, "format": "llama"}))
    _err(path, "'format' is 'llama', expected 'mypt-lightning'")
    (path / "config.json").write_text("{not json")
    _err(path, "cannot read JSON")
    (path / "config.json").write_text(json.dumps(meta))
    (path / "model.safetensors").write_bytes(b"\x00" * 5)
    _err(path, "cannot read safetensors")


@pytest.mark.parametrize("field,value", [("pos_encoding", "learned"), ("mlp_type", "gelu"),
                                         ("norm_type", "layernorm")])
def test_error_legacy_unsupported_architecture(tmp_path, field, value):
    path = write_legacy(tmp_path / "legacy", tiny_model(), **{field: value})
    _err(path, f"{field}='{value}' is not supported")


def test_error_legacy_contents(tmp_path):
    model = tiny_model()
    path = write_legacy(tmp_path / "a", model)
    raw = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**raw, "n_layer": 3}))
    _err(path, "config.json says n_layer=3 but the weights have 2")
    del raw["n_head"]
    (path / "config.json").write_text(json.dumps(raw))
    _err(path, "missing 'n_head'")
    path = write_legacy(tmp_path / "b", model, prefix="")
    sd = torch.load(path / "model.pt", weights_only=True)["model"]
    sd["position_embedding_table.weight"] = torch.zeros(4, 64)
    torch.save(sd, path / "model.pt")
    _err(path, re.escape("unexpected keys: ['position_embedding_table.weight']"))
    sd["lm_head.weight"] = torch.randn(50304, 64)
    del sd["position_embedding_table.weight"]
    torch.save(sd, path / "model.pt")
    raw["n_head"], raw["tie_weights"] = 4, True
    (path / "config.json").write_text(json.dumps(raw))
    _err(path, "tie_weights is true but lm_head.weight differs")


def test_errors_are_user_errors():
    from mypt_lightning.errors import UserError

    assert issubclass(CheckpointError, UserError) and issubclass(ArchitectureMismatchError, CheckpointError)
    assert ckpt_mod.EXPORT_FORMAT == "mypt-lightning"


def write_sharded(path: Path, model: MyPT) -> Path:
    """A checkpoint folder in the layout Lightning's FSDPStrategy writes with
    state_dict_type=sharded (tests/test_distributed.py makes real ones from 2 ranks)."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"model": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint_id=str(path))
    torch.save({"global_step": 3, "mypt_model_config": model.config.to_dict()}, path / "meta.pt")
    return path


def test_lightning_sharded_folder_round_trip(tmp_path):
    model = tiny_model()
    path = write_sharded(tmp_path / "last.ckpt", model)
    assert ckpt_mod.detect_format(path) == "lightning-sharded"
    loaded = load_model(path)
    assert loaded.lm_head.weight is loaded.embed.weight
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_error_lightning_sharded_folder(tmp_path):
    path = write_sharded(tmp_path / "a.ckpt", tiny_model())
    torch.save({"global_step": 3}, path / "meta.pt")
    _err(path, r"meta.pt: no 'mypt_model_config'")
    path = write_sharded(tmp_path / "b.ckpt", tiny_model())
    (path / ".metadata").write_bytes(b"garbage")
    _err(path, r"b.ckpt/.metadata: cannot read")
