"""Export to transformers: logit parity with LlamaForCausalLM loaded from our exported folder
(the model's correctness test, docs/design.md section 3), packed masks vs a 4D-mask reference,
and the export CLI (bias refusal, --drop_lm_head_bias report, exit codes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mypt_lightning.weights.checkpoint import save_exported
from mypt_lightning.weights.hf_export import export_hf
from mypt_lightning.model import MyPT, MyPTConfig, segment_positions

transformers = pytest.importorskip("transformers")
torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]


def _cli():
    spec = importlib.util.spec_from_file_location("export_hf_cli", REPO / "tools" / "export_hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def sharp_model(**overrides) -> MyPT:
    """Tiny model with sharp attention (RoPE and masks matter) and nonzero norm weights/biases."""
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(**overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(8.0)
            elif "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def exported_pair(tmp_path, **overrides):
    model = sharp_model(**overrides)
    save_exported(model, tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    return model, hf


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("rope_scale", [1.0, 4.0])
def test_logits_match_transformers(tmp_path, rope_scale):
    model, hf = exported_pair(tmp_path, rope_scale=rope_scale)
    assert hf.config.tie_word_embeddings and hf.config.rms_norm_eps == 1e-6
    assert hf.config.num_key_value_heads == 4 and hf.config.max_position_embeddings == 256
    if rope_scale != 1.0:
        assert hf.config.rope_parameters["rope_type"] == "linear"
        assert hf.config.rope_parameters["factor"] == rope_scale
    ids = torch.randint(0, 50304, (2, 200))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert rel_err(ours, theirs) < 1e-5
    # The comparison is sensitive to RoPE scaling: the other scale is far off.
    other = MyPT(MyPTConfig.tiny(rope_scale=5.0 - rope_scale)).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert rel_err(other(ids), theirs) > 1e-2


def test_logits_match_with_biases_and_untied_head(tmp_path):
    model, hf = exported_pair(tmp_path, bias=True, tie_weights=False)
    assert not hf.config.tie_word_embeddings and hf.config.attention_bias and not hf.config.mlp_bias
    ids = torch.randint(0, 50304, (1, 64))
    with torch.no_grad():
        assert rel_err(model(ids), hf(ids).logits) < 1e-5


@pytest.mark.parametrize("reset", [True, False])
def test_packed_matches_transformers_with_block_mask(tmp_path, reset):
    """Independent reference for packing: transformers with a 4D block-diagonal causal mask and
    per-segment (or absolute) position_ids."""
    model, hf = exported_pair(tmp_path, segment_position_reset=reset)
    T = 64
    seg = torch.tensor([[1] * 7 + [2] * 13 + [3] * 30 + [0] * 14, [1] * 40 + [2] * 24])
    ids = torch.randint(0, 50304, (2, T))
    allowed = (seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    additive = torch.zeros(2, 1, T, T).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    pos = segment_positions(seg) if reset else torch.arange(T).expand(2, T)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=additive, position_ids=pos).logits
        for impl in ("sdpa", "eager"):
            model.config.attn_impl = impl
            assert rel_err(model(ids, segment_ids=seg), theirs) < 1e-5


# ----------------------------------------------------------------------------- CLI


def _with_bias(tmp_path, value: float) -> Path:
    model = sharp_model(lm_head_bias=True)
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.randn(model.config.vocab_size) * value)
    save_exported(model, tmp_path / "biased")
    return tmp_path / "biased"


def test_cli_refuses_nonzero_bias(tmp_path):
    ckpt = _with_bias(tmp_path, 0.5)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export_hf.py"), "--checkpoint", str(ckpt),
                           "--output_dir", str(tmp_path / "hf")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nonzero bias" in proc.stderr and "--drop_lm_head_bias" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf.tmp-*"))


def test_cli_drop_bias_reports_logit_shift(tmp_path, capsys):
    ckpt = _with_bias(tmp_path, 0.5)
    assert _cli()(["--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "hf"), "--drop_lm_head_bias"]) == 0
    out = capsys.readouterr().out
    assert "max |diff|" in out and "mean |diff|" in out
    max_abs = float(out.split("max |diff| ")[1].split(",")[0])
    from mypt_lightning.weights.checkpoint import load_model

    model = load_model(ckpt)
    assert max_abs == pytest.approx(model.lm_head.bias.abs().max().item(), rel=1e-4)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 50304, (1, 32))
    with torch.no_grad():  # the export equals our model without the bias
        assert rel_err(model(ids) - model.lm_head.bias, hf(ids).logits) < 1e-5


def test_cli_zero_bias_exports_without_flag(tmp_path, capsys):
    ckpt = _with_bias(tmp_path, 0.0)
    assert _cli()(["--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "hf")]) == 0
    assert "dropped" not in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"


def test_cli_bad_input_exit_2(tmp_path, capsys):
    main = _cli()
    assert main(["--checkpoint", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "hf")]) == 2
    assert "does not exist" in capsys.readouterr().err
    save_exported(sharp_model(), tmp_path / "ours")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    assert main(["--checkpoint", str(tmp_path / "ours"), "--output_dir", str(tmp_path / "precious")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    # a previous export is replaced
    assert main(["--checkpoint", str(tmp_path / "ours"), "--output_dir", str(tmp_path / "hf")]) == 0
    assert main(["--checkpoint", str(tmp_path / "ours"), "--output_dir", str(tmp_path / "hf")]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
