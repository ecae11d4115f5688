"""The ``README.md`` model card of a transformers export: what the model is, where it came
from, how its gate went, and how to load and serve it.

Provenance is read from what a training run leaves around its weights, when present::

    runs/<name>/export/config.json  "extra": {"phase", "global_step"}   (an exported folder)
    runs/<name>/run_info.json       phase, init_from, command
    runs/<name>/.hydra/config.yaml  phase.dataset_dir, data_mix.components (the data)
    runs/<name>/gate_report.json    the phase's success gate (tools/eval_gates.py format)

found beside the checkpoint (``<run>/export``) or one folder up
(``<run>/checkpoints/last.ckpt``). Missing pieces are said to be unknown, never guessed.
"""

from __future__ import annotations

import os
from pathlib import Path

from mypt_lightning.model import MyPTConfig

GATE_REPORT = "gate_report.json"
RUN_INFO = "run_info.json"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


def _read_json_object(path: Path) -> dict | None:
    from mypt_lightning.errors import UserError
    from mypt_lightning.jsonio import loads_strict

    try:
        data = loads_strict(path.read_bytes(), where=str(path))
    except (OSError, UserError):
        return None
    return data if isinstance(data, dict) else None


def run_dir_of(checkpoint: str | os.PathLike) -> Path | None:
    """The run directory holding ``checkpoint``: the first of its parent and grandparent
    with run_info.json, gate_report.json or .hydra/config.yaml in it."""
    path = Path(checkpoint).resolve()
    for candidate in (path.parent, path.parent.parent):
        if any((candidate / p).is_file() for p in (RUN_INFO, GATE_REPORT, HYDRA_CONFIG)):
            return candidate
    return None


def provenance(checkpoint: str | os.PathLike, gate_report: str | os.PathLike | None = None) -> dict:
    """What is known about how ``checkpoint`` was trained (keys absent when unknown)."""
    path = Path(checkpoint)
    info: dict = {"source": str(path)}
    if path.is_dir():
        meta = _read_json_object(path / "config.json") or {}
        extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
        for key in ("phase", "global_step"):
            if isinstance(extra.get(key), (str, int)):
                info[key] = extra[key]
    run = run_dir_of(path)
    if run is not None:
        info["run_dir"] = str(run)
        run_info = _read_json_object(run / RUN_INFO) or {}
        for key in ("run_name", "phase", "init_from", "command", "started"):
            if isinstance(run_info.get(key), str) and key not in info:
                info[key] = run_info[key]
        info.update(_data_from_hydra(run / HYDRA_CONFIG))
    if gate_report is not None:  # asked for by name: it must be there
        report = _read_json_object(Path(gate_report))
        if report is None:
            from mypt_lightning.errors import UserError

            raise UserError(f"--gate_report {gate_report}: not a readable JSON report (tools/eval_gates.py --report)")
        info["gate_report"], info["gate_report_path"] = report, str(gate_report)
    elif run is not None and (run / GATE_REPORT).is_file():
        report = _read_json_object(run / GATE_REPORT)
        if report is not None:
            info["gate_report"], info["gate_report_path"] = report, str(run / GATE_REPORT)
    return info


def _data_from_hydra(path: Path) -> dict:
    """dataset_dir and the mixture of a run's composed config (interpolations resolved)."""
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        out = {}
        dataset = OmegaConf.select(cfg, "phase.dataset_dir", throw_on_missing=False)
        if dataset is not None:
            out["dataset_dir"] = str(dataset)
        components = OmegaConf.select(cfg, "data.data_mix", throw_on_missing=False)
        if components:
            out["data_mix"] = [{"name": str(c.get("name")), "path": str(c.get("path")), "weight": float(c.get("weight"))}
                               for c in OmegaConf.to_container(components, resolve=True)]
        return out
    except Exception:  # a config that does not resolve outside its run: the data is then unknown
        return {}


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _gate_section(report: dict, path: str) -> list[str]:
    verdict = "PASSED" if report.get("passed") else "FAILED"
    what = f"phase {report.get('phase')}" + (" with regression" if report.get("regression") else "")
    lines = [f"**{what}: {verdict}** (`{Path(path).name}`, {report.get('created', 'date unknown')}).", ""]
    gates = report.get("gates") if isinstance(report.get("gates"), list) else []
    if gates:
        lines += ["| gate | passed | criteria |", "|---|---|---|"]
        for g in gates:
            if not isinstance(g, dict):
                continue
            crits = [c.get("text", "") for c in g.get("criteria", []) if isinstance(c, dict)]
            lines.append(f"| {g.get('phase')} {g.get('name', '')} | {'yes' if g.get('passed') else 'no'} | "
                         f"{'; '.join(crits) or '-'} |")
        lines.append("")
    for o in report.get("ood", []) if isinstance(report.get("ood"), list) else []:
        if isinstance(o, dict) and "pass_rate" in o:
            lines.append(f"- OOD `{o.get('file')}`: pass rate {_fmt(o['pass_rate'])}")
    for w in report.get("warnings", []) if isinstance(report.get("warnings"), list) else []:
        lines.append(f"- warning: {w}")
    return lines


def model_card(config: MyPTConfig, info: dict, *, num_parameters: int, shift=None) -> str:
    """The README.md text. ``shift``: the LogitShift when a legacy lm_head bias was dropped."""
    c = config
    phase = info.get("phase", "unknown")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [mypt, llama]", "---", "",
        f"# MyPT ({phase})", "",
        "A LLaMA-style decoder trained with mypt-lightning, exported as `LlamaForCausalLM` with its "
        "tokenizer (GPT-2 byte-level BPE `r50k_base` plus 19 MyPT protocol tags), a chat template "
        "for the MyPT protocol and a generation config.", "",
        "## Architecture", "",
        "| | |", "|---|---|",
        f"| parameters | {num_parameters:,} |",
        f"| layers / hidden / heads | {c.n_layer} / {c.n_embd} / {c.n_head} (head_dim {c.head_dim}, no GQA) |",
        f"| MLP | SwiGLU, hidden {c.hidden_dim} |",
        f"| norm | RMSNorm, eps {c.norm_eps:g} |",
        f"| positions | RoPE theta {c.rope_theta:g}" + (f", linear scaling x{c.rope_scale:g}" if c.rope_scale != 1 else "")
        + f", context {c.block_size} tokens |",
        f"| vocabulary | {c.vocab_size} rows (50276 tokens; 50276..{c.vocab_size - 1} are padding, never generated) |",
        f"| head | {'tied to the embedding' if c.tie_weights else 'untied'}, no bias |",
        "",
        "## Training", "",
        f"- phase: {phase}" + (f", step {info['global_step']}" if "global_step" in info else ""),
        f"- started from: {info.get('init_from') or 'unknown'}" if "run_dir" in info else "- started from: unknown",
        f"- data: {info['dataset_dir']}" if "dataset_dir" in info else "- data: unknown (no run config beside the checkpoint)",
    ]
    for comp in info.get("data_mix", []):
        lines.append(f"  - {comp['name']}: weight {comp['weight']:g} (`{comp['path']}`)")
    if "command" in info:
        lines.append(f"- command: `{info['command']}`")
    lines.append(f"- exported from: `{info.get('source')}`")
    if shift is not None:
        lines += ["", "The checkpoint had a trained `lm_head` bias, which Llama cannot hold; it was dropped "
                  f"(`--drop_lm_head_bias`). On {shift.positions} probe positions the logits moved by max "
                  f"{shift.max_abs:.4g} (mean {shift.mean_abs:.4g}); the top-1 token stayed the same at "
                  f"{shift.top1_agreement:.1%} of them and the top-5 sets overlap {shift.top5_overlap:.1%}."]
    lines += ["", "## Success gate", ""]
    if "gate_report" in info:
        lines += _gate_section(info["gate_report"], info["gate_report_path"])
    else:
        lines.append("No gate_report.json was found beside the checkpoint (run `tools/eval_gates.py`).")
    lines += USAGE.replace("CONTEXT", str(c.block_size)).splitlines()
    return "\n".join(lines).rstrip() + "\n"


USAGE = """
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("EXPORT")
model = AutoModelForCausalLM.from_pretrained("EXPORT")
messages = [{"role": "system", "content": "You are MyPT."}, {"role": "user", "content": "Say hello."}]
ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids)                     # greedy; stops at </myPT_assistant>, <myPT_eot>
print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False))
```

The chat template speaks the MyPT protocol: `system`, `user` (with an optional `context` field
for retrieved documents), `assistant` (optional `think` / `reasoning_content` and `cite`),
`assistant` with OpenAI-style `tool_calls` (rendered as `<myPT_toolcall>{"name": ..., ...}`) and
`tool` messages (rendered as `<myPT_toolresult>`). `generation_config.json` stops at
`</myPT_assistant>`, `<myPT_eot>` and `<|endoftext|>` and never emits the padding rows.

**Difference to mypt-lightning's own tools:** the HF tokenizer (and so the chat template) turns
a tag string written inside message content, e.g. a user typing `<myPT_eot>`, into the tag
token; mypt-lightning's serializer and `tools/chat.py` always keep content plain text. Encode
untrusted text with `tok(text, split_special_tokens=True)` when building ids by hand.

Decode with `skip_special_tokens=False` to see `<myPT_think>`, `<myPT_cite>` and
`<myPT_toolcall>` spans.

### vLLM (untested here: no GPU on the machine that made this)

```bash
vllm serve EXPORT --served-model-name mypt --max-model-len CONTEXT
curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{
  "model": "mypt", "temperature": 0, "skip_special_tokens": false, "stop_token_ids": [50262, 50275, 50256],
  "messages": [{"role": "system", "content": "You are MyPT."}, {"role": "user", "content": "Say hello."}]}'
```

### llama.cpp

`python tools/export_gguf.py --checkpoint CHECKPOINT --output mypt.gguf` (mypt-lightning) converts
with llama.cpp's own `convert_hf_to_gguf.py`; load the file with `llama-cpp-python` or `llama-cli`.

### Fine-tune further

mypt-lightning reads this folder back: `python run.py phase=... init_from=EXPORT`.
"""


__all__ = ["model_card", "provenance", "run_dir_of"]
