"""Phase pipelines: one command builds the training dataset of a curriculum phase.

    python tools/prepare_phase.py phase=phase3_chat_sft [--dry_run] [--force] [--with_replay]
        [--pretrain_sources PATH ...] [--with_deps] [data_recipe.num_examples=2000 ...]

The recipe is ``conf/data_recipe/<phase>.yaml``, composed inside the training config tree
(``conf/train.yaml``), so the pipeline writes exactly the dataset the training run reads
(``phase.dataset_dir``)::

    generate  every enabled source of the recipe -> <work_dir>/<source>.jsonl
              generator: a generator module, in-process       (tools/generate_*.py)
              pretrain_text: pre-training shards/text        (tools/generate_pretrain_replay.py)
              hf: a Hugging Face dataset or local copy       (tools/convert_hf_dataset.py)
              jsonl: a file you already have                 (no step)
    mix       the sources at their shares of the phase's OWN data (by records, or by
              tokens for phase 1b) -> <work_dir>/<phase>_mixed.jsonl   (tools/mix_sft_jsonl.py)
    prepare   validate, split, tokenize, pack -> phase.dataset_dir     (tools/prepare_sft.py)
    validate  the named checks of the written dataset         (tools/validate_sft_dataset.py)

Cross-phase and pre-training replay are not mixed into the JSONL: DESIGN.md 7-8 mixes the
prepared datasets at training time (``conf/data_mix/<phase>.yaml``), so a replay share can
be swept without re-tokenizing. ``with_replay`` adds the steps that build the shared
pre-training replay dataset, ``with_deps`` the pipelines of the earlier phases whose
datasets the phase's data_mix needs and that are missing.

Every step has the equivalent ``python tools/...`` command line. A step runs when its
output is missing and needed downstream, when the recipe behind it changed (a fingerprint
of its command and everything upstream, kept in ``<work_dir>/pipeline_state.json``), when
a step before it ran, or with ``force``; an output made outside the pipeline is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mypt_lightning.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
STATE_FILE = "pipeline_state.json"
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
# Without real pre-training text the bundled workspace documents stand in; they hold only a
# few hundred distinct windows, so sampling from them is capped at about this many tokens.
FALLBACK_TOKEN_BUDGET = 60_000


# ------------------------------------------------------------------------------ config
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


def _plain(node) -> Any:
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


# ------------------------------------------------------------------------------ plan
@dataclass
class Step:
    group: str  # the phase name, or "pretrain_replay"
    label: str
    command: str  # the equivalent command line, as planned
    action: Callable[["Step"], str | None]
    outputs: list[Path] = field(default_factory=list)
    upstream: list[int] = field(default_factory=list)
    state_dir: Path | None = None
    target: bool = False  # a dataset the pipeline exists to build: made when missing
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    resolved: str | None = None  # the command with run-time values filled in


@dataclass
class PhaseTarget:
    phase: str
    dataset_dir: Path
    components: list[dict]
    eval_sets: dict


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    targets: list[PhaseTarget] = field(default_factory=list)

    def add(self, step: Step) -> int:
        h = hashlib.sha256(step.command.encode())
        for u in step.upstream:
            h.update(self.steps[u].fingerprint.encode())
        step.fingerprint = h.hexdigest()[:16]
        self.steps.append(step)
        return len(self.steps) - 1


def python_command(tool: str, argv: list[str]) -> str:
    return shlex.join(["python", f"tools/{tool}", *argv])


def _display(tool: str, argv: list[str], fallback: list[str]) -> str:
    """The command line, with the workspace stand-in files shown as one (unquoted) shell glob."""
    if not fallback or not set(fallback) <= set(argv):
        return python_command(tool, argv)
    first, glob = argv.index(fallback[0]), shlex.quote(str(Path(fallback[0]).parent)) + "/*.md"
    rest = [a for a in argv if a not in set(fallback)]
    return " ".join([python_command(tool, rest[:first]), glob, shlex.join(rest[first:])]).rstrip()


def generator_argv(generator: str, output: Path, count: int, seed: int, args: dict, label: str) -> list[str]:
    """The command line of a generator for ``args`` (flag forms read from its own parser), checked."""
    parser = importlib.import_module(f"mypt_lightning.generators.{generator}").build_parser()
    actions = parser._option_string_actions  # noqa: SLF001 (argparse exposes no public lookup)
    argv = ["--output", str(output), "--num_examples", str(count), "--seed", str(seed)]
    for key, value in args.items():
        action = actions.get(f"--{key}")
        if action is None:
            raise UserError(f"{label}: {GENERATOR_TOOLS[generator]} has no option --{key}")
        if value is None or value is False:
            continue
        if value is True and action.nargs == 0:
            argv.append(f"--{key}")
            continue
        if isinstance(value, dict):  # NAME=SPEC pairs, e.g. --source squad_v2=hf; null drops one
            value = [f"{k}={v}" for k, v in value.items() if v is not None]
        if isinstance(value, list):
            if isinstance(action, argparse._AppendAction):  # noqa: SLF001
                argv += [x for v in value for x in (f"--{key}", str(v))]
            elif value:
                argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        last = err.getvalue().strip().splitlines()[-1:] or ["invalid arguments"]
        raise UserError(f"{label}: {GENERATOR_TOOLS[generator]} rejects the recipe's arguments: {last[0]}") from None
    return argv


def _run_generator(generator: str, argv: list[str], label: str, hint: str = "") -> str | None:
    module = importlib.import_module(f"mypt_lightning.generators.{generator}")
    try:
        code = module.main(argv)
    except UserError:
        raise
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise UserError(f"{label} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        f"{hint}") from exc
    if code:
        raise UserError(f"{label} failed with exit status {code}")
    return None


def _counts(sources: list[Source], recipe: dict, by_tokens: bool) -> dict[str, int]:
    total_share = sum(s.share for s in sources)
    counts = {}
    for s in sources:
        if s.num_examples is not None:
            counts[s.name] = int(s.num_examples)
        elif by_tokens:
            if not s.tokens_per_episode:
                raise UserError(f"data_recipe.sources.{s.name}: mixing by tokens needs tokens_per_episode")
            tokens = float(recipe["num_tokens"]) * s.share / total_share
            counts[s.name] = max(1, math.ceil(tokens / float(s.tokens_per_episode) * float(recipe.get("oversample", 1.0))))
        else:
            counts[s.name] = max(1, round(int(recipe["num_examples"]) * s.share / total_share))
    return counts


def pretrain_inputs(paths: list[str] | None, plan: Plan) -> tuple[list[str], list[str]]:
    """(inputs, fallback files): the user's pre-training sources, else the workspace documents (loudly)."""
    if paths:
        return [str(p) for p in paths], []
    from mypt_lightning.workspace import default_docs_dir

    files = sorted(str(p) for p in default_docs_dir().glob("*.md"))
    message = (f"NO PRE-TRAINING TEXT GIVEN (--pretrain_sources): using the {len(files)} bundled workspace documents "
               f"({default_docs_dir()}/*.md) as general text instead. That is a stand-in for demos and tests, NOT "
               f"real pre-training replay; sampling is capped at ~{FALLBACK_TOKEN_BUDGET} tokens. Pass your token "
               f"shards (.bin) or text files with --pretrain_sources PATH ...")
    if message not in plan.warnings:
        plan.warnings.append(message)
    return files, files


def _load_state(state_dir: Path | None) -> dict:
    path = (state_dir or Path(".")) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if state_dir and path.is_file() else {}
    except (OSError, ValueError):
        return {}


FINGERPRINT_TAG = "# prepare_phase fingerprint "


def _recorded(step: Step, state: dict) -> str | None:
    """The fingerprint the step's output was made with: a dataset keeps it in its metadata
    (so it survives a deleted work dir), intermediate files in the work dir's state file."""
    if not step.outputs:
        return None
    if step.target:
        try:
            meta = json.loads((step.outputs[0] / "dataset_metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        command = str(meta.get("command") or "")
        return command.split(FINGERPRINT_TAG, 1)[1].strip() if FINGERPRINT_TAG in command else None
    return state.get(str(step.outputs[0]))


def _save_state(step: Step) -> None:
    if step.state_dir is None or not step.outputs or step.target:
        return
    state = _load_state(step.state_dir)
    state[str(step.outputs[0])] = step.fingerprint
    step.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = step.state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, step.state_dir / STATE_FILE)


# ------------------------------------------------------------------------------ phase steps
def plan_phase(cfg, plan: Plan, *, pretrain_sources: list[str] | None = None) -> None:
    """Append generate -> mix -> prepare -> validate for the phase of ``cfg`` to ``plan``."""
    if "data_recipe" not in cfg:
        raise UserError("the config has no data_recipe (conf/train.yaml needs `- data_recipe: ${phase}` in its defaults)")
    phase, recipe = str(cfg.phase.name), _plain(cfg.data_recipe)
    work, out_dir, seed = Path(recipe["work_dir"]), Path(recipe["output_dir"]), int(recipe["seed"])
    by_tokens = (recipe.get("mix") or {}).get("by", "records") == "tokens"
    if by_tokens and "num_tokens" not in recipe:
        raise UserError(f"data_recipe ({phase}): mix.by=tokens needs num_tokens")
    sources = parse_sources(recipe, "data_recipe")
    counts = _counts(sources, recipe, by_tokens)
    prep = recipe["prepare"]
    mix_inputs, producers, held_out = [], [], None
    for s in sources:
        if s.kind == "jsonl":
            mix_inputs.append((s, Path(s.path)))
            if not Path(s.path).is_file():
                plan.warnings.append(f"data_recipe.sources.{s.name}: {s.path} does not exist (yet); the mix needs it")
            continue
        step, val = _source_step(plan, phase, s, recipe, counts[s.name], len(sources), pretrain_sources)
        held_out = val or held_out
        producers.append(plan.add(step))
        mix_inputs.append((s, step.outputs[0]))

    mixed = work / f"{phase}_mixed.jsonl"
    shares = {s.name: s.share / sum(x.share for x in sources) for s in sources}
    specs = [f"{path}:{'RATIO' if (by_tokens or s.kind == 'jsonl') else '1.0'}" for s, path in mix_inputs]
    notes = []
    if by_tokens:
        notes.append("RATIO is measured at run time: the sources become "
                     + " / ".join(f"{shares[s.name]:.0%} {s.name}" for s in sources)
                     + f" of the tokens (at most num_tokens={recipe['num_tokens']})")
    elif any(s.kind == "jsonl" for s, _ in mix_inputs):
        notes.append("RATIO of a jsonl source = its planned count / its record count, computed at run time")
    mix_argv = ["--inputs", *specs, "--output", str(mixed), "--shuffle", "--seed", str(seed)]
    mix = plan.add(Step(phase, "mix", python_command("mix_sft_jsonl.py", mix_argv),
                        lambda st: _run_mix(st, mix_inputs, mixed, seed, by_tokens, shares, counts, recipe),
                        [mixed], producers, work, notes=notes))
    inputs, val_split, split_fields = [mixed], float(prep["val_split"]), list(prep.get("split_by_fields") or [])
    if held_out:
        inputs.append(held_out[0])
        val_split, split_fields = held_out[2] / (held_out[1] + held_out[2]), split_fields + ["_meta.split"]
    _add_prepare(plan, phase, inputs, out_dir, prep, seed, [mix], work, val_split=val_split,
                 split_fields=split_fields, expected_val=held_out[2] if held_out else None,
                 validate=recipe.get("validate", True), max_samples=recipe.get("validate_max_samples"))
    mix_cfg = _plain(cfg.data_mix)
    plan.targets.append(PhaseTarget(phase, out_dir, list(mix_cfg.get("components") or []),
                                    dict(mix_cfg.get("eval_sets") or {})))


def _source_step(plan: Plan, phase: str, s: Source, recipe: dict, count: int, num_sources: int,
                 pretrain_sources: list[str] | None) -> tuple[Step, tuple | None]:
    """The step that makes ``<work_dir>/<source>.jsonl`` (and, with held_out_val, its val file)."""
    work, seed, where = Path(recipe["work_dir"]), int(recipe["seed"]), f"data_recipe.sources.{s.name}"
    out, notes = work / f"{s.name}.jsonl", []
    if s.kind == "hf":
        unknown = sorted(set(s.args) - HF_ARGS)
        if unknown:
            raise UserError(f"{where}.args: unknown key(s) {unknown}; allowed: {sorted(HF_ARGS)}")
        argv = ["--dataset", s.dataset, "--output", str(out), "--max_examples", str(count)]
        for key, value in s.args.items():
            if value is True:
                argv.append(f"--{key}")
            elif value not in (None, False):
                argv += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
        return Step(phase, f"convert {s.name}", python_command("convert_hf_dataset.py", argv),
                    lambda st: _run_hf(s, out, count), [out], state_dir=work), None
    gen = s.generator if s.kind == "generator" else "pretrain_replay"
    args = {} if gen == "pretrain_replay" else {"language": recipe["language"], "de_share": recipe["de_share"]}
    args.update(s.args)
    fallback, hint, held_out = [], "", None
    if s.kind == "pretrain_text":
        args["inputs"], fallback = pretrain_inputs(pretrain_sources, plan)
        count = _cap(count, fallback, s.tokens_per_episode or args.get("max_tokens", 256), notes)
        hint = " (the workspace stand-in is small: pass real text with --pretrain_sources)" if fallback else ""
    if _uses_hub(args.get("source")):
        hint = " (no network? point the sources at local files, e.g. data_recipe.qa_sources.squad_v2=PATH)"
    outputs = [out]
    if s.held_out_val:
        if gen != "operators" or num_sources != 1:
            raise UserError(f"{where}: held_out_val needs the operators generator as the only source")
        n_val = max(1, round(count * float(recipe["prepare"]["val_split"])))
        held_out = (out.with_name(f"{s.name}.val.jsonl"), count, n_val)
        args.update(val_examples=n_val, val_output=str(held_out[0]))
        outputs.append(held_out[0])
    argv = generator_argv(gen, out, count, seed, args, where)
    return Step(phase, f"generate {s.name}", _display(GENERATOR_TOOLS[gen], argv, fallback),
                lambda st: _run_generator(gen, argv, f"generate {where}", hint), outputs, state_dir=work,
                notes=notes), held_out


def plan_replay(cfg, plan: Plan, *, pretrain_sources: list[str] | None = None) -> None:
    """Append the steps that build the shared pre-training replay dataset."""
    rp = _plain(cfg.data_recipe.pretrain_replay)
    seed = int(rp["seed"])
    work, out_dir = Path(rp["work_dir"]), Path(rp["output_dir"])
    out, notes = work / "pretrain_replay.jsonl", []
    inputs, fallback = pretrain_inputs(pretrain_sources, plan)
    args = {**(rp.get("args") or {}), "inputs": inputs}
    count = _cap(int(rp["num_examples"]), fallback, args.get("max_tokens", 256), notes)
    argv = generator_argv("pretrain_replay", out, count, seed, args, "data_recipe.pretrain_replay")
    hint = " (the workspace stand-in is small: pass real text with --pretrain_sources)" if fallback else ""
    gen = plan.add(Step("pretrain_replay", "generate replay text", _display(
        "generate_pretrain_replay.py", argv, fallback),
        lambda st: _run_generator("pretrain_replay", argv, "generate pretrain replay", hint), [out], state_dir=work,
        notes=notes))
    _add_prepare(plan, "pretrain_replay", [out], out_dir, rp["prepare"], seed, [gen], work,
                 val_split=float(rp["prepare"]["val_split"]), split_fields=[], expected_val=None,
                 validate=rp.get("validate", True), max_samples=None)


def _uses_hub(spec) -> bool:
    """Whether a context-extension ``source`` argument (NAME: SPEC dict or NAME=SPEC list) reads the hub."""
    specs = [v for v in spec.values() if v is not None] if isinstance(spec, dict) else list(spec or [])
    return any(str(v).split("=")[-1] == "hf" or str(v).split("=")[-1].startswith("hf:") for v in specs)


def _cap(count: int, fallback: list[str], tokens_per_episode, notes: list[str]) -> int:
    cap = max(1, FALLBACK_TOKEN_BUDGET // max(1, int(tokens_per_episode)))
    if fallback and count > cap:
        notes.append(f"capped from {count} to {cap} episodes: the workspace stand-in has only a few hundred windows")
        return cap
    return count


def _add_prepare(plan: Plan, group: str, inputs: list[Path], out_dir: Path, prep: dict, seed: int, upstream: list[int],
                 work: Path, *, val_split: float, split_fields: list[str], expected_val: int | None, validate: bool,
                 max_samples: int | None) -> None:
    from .prepare import PrepareConfig

    argv = [x for p in inputs for x in ("--input", str(p))]
    argv += ["--output_dir", str(out_dir), "--val_split", repr(val_split), "--seed", str(seed)]
    if prep.get("packing"):
        argv += ["--enable_packing", "--pack_block_size", str(int(prep["block_size"]))]
    if prep.get("pack_by_field"):
        argv += ["--pack_by_field", prep["pack_by_field"]]
    argv += ["--weighted_mask"] * bool(prep.get("weighted_mask")) + ["--truncate_long"] * bool(prep.get("truncate_long"))
    argv += [x for f in split_fields for x in ("--split_by_field", f)]
    argv += ["--on-error", prep.get("on_error", "stop"), "--overwrite"]
    command = python_command("prepare_sft.py", argv)
    cfg = PrepareConfig(inputs=[str(p) for p in inputs], output_dir=str(out_dir), val_split=val_split, seed=seed,
                        packing=bool(prep.get("packing")), block_size=int(prep.get("block_size", 4096)),
                        pack_by_field=prep.get("pack_by_field"), weighted=bool(prep.get("weighted_mask")),
                        on_error=prep.get("on_error", "stop"), truncate_long=bool(prep.get("truncate_long")),
                        split_by_fields=list(split_fields), overwrite=True, command=command)
    prepared = plan.add(Step(group, "prepare", command, lambda st: _run_prepare(st, cfg, expected_val), [out_dir],
                             upstream, work, target=True))
    if validate:
        vargv = ["--dataset", str(out_dir)] + (["--max_samples", str(max_samples)] if max_samples else [])
        plan.add(Step(group, "validate", python_command("validate_sft_dataset.py", vargv),
                      lambda st: _run_validate(out_dir, max_samples), [], [prepared], work))


def _run_hf(s: Source, out: Path, count: int) -> str:
    from .hf_convert import convert_dataset

    kwargs = {k: s.args[k] for k in ("languages", "layout", "split", "config", "min_turns", "system_prompt")
              if s.args.get(k) is not None}
    if s.args.get("drop_tool_definitions"):
        kwargs["keep_tool_definitions"] = False
    report = convert_dataset(s.dataset, out, max_examples=count, **kwargs)
    short = f"; only {report['episodes']} of {count} wanted: its share falls short" if report["episodes"] < count else ""
    return f"converted {report['episodes']} episodes from {s.dataset}{short}"


def _record_text(line: bytes) -> str:
    record = json.loads(line)
    if record.get("_replay") is True:
        return record["text"]
    return " ".join(str(m.get(k, "")) for m in record.get("messages", []) for k in ("content", "context", "think", "cite"))


def measure_tokens(path: Path, sample: int = 2000) -> tuple[int, int]:
    """(records, tokens) of a JSONL file: exact up to ``sample`` records, else extrapolated by characters."""
    from mypt_lightning.tokenizer import get_tokenizer

    with open(path, "rb") as fh:
        n = sum(1 for line in fh if line.strip())
    step, chars, texts = max(1, n // sample), 0, []
    with open(path, "rb") as fh:
        for i, line in enumerate(x for x in fh if x.strip()):
            text = _record_text(line)
            chars += len(text)
            if i % step == 0:
                texts.append(text)
    tokens = sum(len(ids) for ids in get_tokenizer().encode_batch_text(texts))
    return n, tokens if step == 1 else round(chars * tokens / max(1, sum(map(len, texts))))


def _run_mix(step: Step, mix_inputs: list, mixed: Path, seed: int, by_tokens: bool, shares: dict, counts: dict,
             recipe: dict) -> str:
    from .jsonl import check_input_files
    from .mixing import MixInput, format_report, mix_jsonl

    check_input_files(p for _, p in mix_inputs)
    ratios, extra = {}, ""
    if by_tokens:
        measured = {s.name: measure_tokens(p)[1] for s, p in mix_inputs}
        if not all(measured.values()):
            raise UserError(f"mix: a source has no tokens: {measured}")
        total = min([float(recipe["num_tokens"])] + [measured[n] / shares[n] for n in measured])
        ratios = {n: min(1.0, float(f"{shares[n] * total / measured[n]:.6g}")) for n in measured}
        got = {n: ratios[n] * measured[n] for n in measured}
        extra = "\ntoken mix: " + ", ".join(f"{n} {got[n]:,.0f} of {measured[n]:,} tokens ({got[n] / sum(got.values()):.1%})"
                                           for n in got)
        if total < 0.8 * float(recipe["num_tokens"]):
            extra += (f"\nnote: {sum(got.values()):,.0f} tokens instead of num_tokens={recipe['num_tokens']:,}: a source "
                      "produced fewer tokens than planned (raise its tokens_per_episode estimate or its inputs)")
    for s, path in mix_inputs:
        if s.name not in ratios:
            if s.kind == "jsonl":
                with open(path, "rb") as fh:
                    records = sum(1 for line in fh if line.strip())
                ratios[s.name] = float(f"{counts[s.name] / max(1, records):.6g}")
            else:
                ratios[s.name] = 1.0
    specs = [f"{path}:{ratios[s.name]:g}" for s, path in mix_inputs]
    step.resolved = python_command("mix_sft_jsonl.py", ["--inputs", *specs, "--output", str(mixed), "--shuffle",
                                                        "--seed", str(seed)])
    report = mix_jsonl([MixInput(path, ratios[s.name]) for s, path in mix_inputs], mixed, shuffle=True, seed=seed)
    return format_report(report) + extra


def _run_prepare(step: Step, cfg, expected_val: int | None) -> str:
    from .prepare import prepare_sft

    cfg.command = f"{step.command}  {FINGERPRINT_TAG}{step.fingerprint}"  # kept in dataset_metadata.json
    result = prepare_sft(cfg)
    got = result.metadata["counts"].get("val_episodes", 0)
    if expected_val is not None and got != expected_val:
        raise UserError(f"prepare: the held-out val file should become the val split ({expected_val} episodes), "
                        f"got {got}; see {cfg.output_dir}/dataset_metadata.json")
    return result.summary


def _run_validate(dataset_dir: Path, max_samples: int | None) -> str:
    from .validate import format_results, validate_dataset

    results = validate_dataset(dataset_dir, max_samples=max_samples)
    failed = [r for r in results if not r.passed]
    if failed:
        first = next((e for r in failed for e in r.examples), failed[0].not_run or "")
        raise UserError(f"{dataset_dir} failed the checks {[r.name for r in failed]} (first: {first}); "
                        f"details: python tools/validate_sft_dataset.py --dataset {dataset_dir}")
    return format_results(results) + "\nall checks passed"


def _dep_phases(cfg, path_overrides: list[str], config_dir) -> list[str]:
    """Earlier phases whose datasets the data_mix of ``cfg`` needs and that do not exist yet."""
    mix, own = _plain(cfg.data_mix), Path(str(cfg.phase.dataset_dir)).resolve()
    wanted = [Path(c["path"]).resolve() for c in mix.get("components") or []]
    wanted += [Path(p).resolve() for p in (mix.get("eval_sets") or {}).values()]
    missing = [p for p in dict.fromkeys(wanted) if p != own and not p.exists()]
    if not missing:
        return []
    by_dir = {}
    for path in sorted((Path(config_dir) / "phase").glob("*.yaml")):
        other = compose_config([f"phase={path.stem}", *path_overrides], config_dir)
        by_dir[Path(str(other.phase.dataset_dir)).resolve()] = path.stem
    return [by_dir[p] for p in missing if p in by_dir]


def build_plan(overrides: list[str] = (), *, with_replay: bool = False, with_deps: bool = False,
               pretrain_sources: list[str] | None = None, config_dir: str | Path = CONF_DIR) -> Plan:
    """Compose the config for ``overrides`` and plan its phase (plus deps and replay when asked)."""
    cfg = compose_config(overrides, config_dir)
    plan = Plan()
    if with_deps:
        path_overrides = [o for o in overrides if o.lstrip("+~").startswith("paths.")]
        for dep in _dep_phases(cfg, path_overrides, config_dir):
            plan_phase(compose_config([f"phase={dep}", *path_overrides], config_dir), plan,
                       pretrain_sources=pretrain_sources)
    plan_phase(cfg, plan, pretrain_sources=pretrain_sources)
    if with_replay:
        plan_replay(cfg, plan, pretrain_sources=pretrain_sources)
    return plan


# ------------------------------------------------------------------------------ decide + run
def decide(plan: Plan, force: bool = False) -> list[str]:
    """Per step: "run", or "skip: <why>" (see the module docstring for the rules)."""
    n = len(plan.steps)
    states = {}
    exists, missing, changed, outside = [False] * n, [False] * n, [False] * n, [False] * n
    for i, s in enumerate(plan.steps):
        if s.state_dir not in states:
            states[s.state_dir] = _load_state(s.state_dir)
        recorded = _recorded(s, states[s.state_dir])
        exists[i] = bool(s.outputs) and all(p.exists() for p in s.outputs)
        missing[i] = bool(s.outputs) and not exists[i]
        changed[i] = force or (exists[i] and recorded is not None and recorded != s.fingerprint)
        outside[i] = exists[i] and recorded is None
    run = [changed[i] or (missing[i] and plan.steps[i].target) for i in range(n)]
    grew = True
    while grew:
        grew = False
        for i, s in enumerate(plan.steps):
            if not run[i] and any(run[u] for u in s.upstream):
                run[i] = grew = True
            if run[i]:
                for u in s.upstream:
                    if missing[u] and not run[u]:
                        run[u] = grew = True
    status = []
    for i, s in enumerate(plan.steps):
        if run[i]:
            status.append("run")
        elif outside[i]:
            status.append("skip: output exists, made outside this pipeline (--force rebuilds it)")
        elif exists[i]:
            status.append("skip: up to date")
        elif s.outputs:
            status.append("skip: not needed (what it feeds is up to date)")
        else:
            status.append("skip: dataset unchanged")
    return status


def execute(plan: Plan, *, dry_run: bool = False, force: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run (or with ``dry_run`` only print) the plan; returns counts for the summary."""
    import time

    status = decide(plan, force)
    for w in plan.warnings:
        echo(f"\n!!! WARNING: {w}\n")
    n, ran = len(plan.steps), 0
    for i, (step, st) in enumerate(zip(plan.steps, status), 1):
        echo(f"[{i}/{n}] {step.group}: {step.label}  ({'would run' if dry_run and st == 'run' else st})")
        echo(f"    $ {step.command}")
        for note in step.notes:
            echo(f"    # {note}")
        if dry_run or st != "run":
            continue
        start = time.time()
        for p in step.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
        result = step.action(step)
        if step.resolved and step.resolved != step.command:
            echo(f"    $ {step.resolved}   (as run)")
        if result:
            echo("    " + result.replace("\n", "\n    "))
        _save_state(step)
        ran += 1
        echo(f"    done in {time.time() - start:.1f} s")
    return {"steps": n, "ran": ran, "would_run": status.count("run") if dry_run else 0,
            "skipped": sum(1 for s in status if s != "run"), "status": status}


# ------------------------------------------------------------------------------ summary
def summarize(plan: Plan, result: dict, dry_run: bool) -> str:
    lines = ["", "=" * 78]
    if dry_run:
        lines.append(f"DRY RUN: {result['would_run']} of {result['steps']} steps would run; nothing was written.")
    else:
        lines.append(f"{result['ran']} of {result['steps']} steps ran, {result['skipped']} skipped.")
    for t in plan.targets:
        lines.append(f"{t.phase}: dataset {t.dataset_dir}" + ("" if t.dataset_dir.exists() else "  (not built yet)"))
        meta_path = t.dataset_dir / "dataset_metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            for split, st in meta.get("splits", {}).items():
                frac = (meta.get("supervised_fraction") or {}).get(split, st["supervised_tokens"] / max(1, st["tokens"]))
                lines.append(f"    {split:<5} {st['episodes']} episodes in {st['samples']} samples of "
                             f"{meta.get('block_size') or 'var.'} tokens, {frac:.1%} of episode tokens supervised")
        if t.components:
            lines.append("  training mixture (conf/data_mix, mixed at training time):")
        for c in t.components:
            there = Path(c["path"]).exists()
            lines.append(f"    {c['weight']:>5.0%}  {c['name']:<32} {c['path']}  {'ok' if there else 'MISSING'}")
        missing = [c for c in t.components if not Path(c["path"]).exists() and Path(c["path"]) != t.dataset_dir]
        if missing:
            lines.append("  missing datasets: build them first (--with_deps builds earlier phases, --with_replay the "
                         "pre-training replay), or train with data_mix=none")
        lines.append(f"  train: python run.py phase={t.phase}")
    for w in plan.warnings:
        lines.append(f"!!! WARNING: {w}")
    return "\n".join(lines)


__all__ = ["CONF_DIR", "GENERATOR_TOOLS", "Plan", "PhaseTarget", "Source", "Step", "compose_config", "decide",
           "execute", "generator_argv", "parse_sources", "pretrain_inputs", "python_command", "summarize"]
