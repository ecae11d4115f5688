"""Planning: a composed config becomes the steps of its phase (generate -> mix -> prepare ->
validate), of the shared pre-training replay dataset (``with_replay``) and of the earlier
phases whose datasets its data_mix needs (``with_deps``). Nothing runs here."""

from __future__ import annotations

import math
from pathlib import Path

from mypt_lightning.errors import UserError

from .actions import run_generator, run_hf_convert, run_mix, run_prepare, run_validate
from .commands import display_command, generator_argv, python_command
from .plan import PhaseTarget, Plan, Step
from .recipe import CONF_DIR, GENERATOR_TOOLS, HF_ARGS, Source, compose_config, parse_sources, to_container

# Without real pre-training text the bundled workspace documents stand in; they hold only a
# few hundred distinct windows, so sampling from them is capped at about this many tokens.
FALLBACK_TOKEN_BUDGET = 60_000


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
    from mypt_lightning.workspace.store import default_docs_dir

    files = sorted(str(p) for p in default_docs_dir().glob("*.md"))
    message = (f"NO PRE-TRAINING TEXT GIVEN (--pretrain_sources): using the {len(files)} bundled workspace documents "
               f"({default_docs_dir()}/*.md) as general text instead. That is a stand-in for demos and tests, NOT "
               f"real pre-training replay; sampling is capped at ~{FALLBACK_TOKEN_BUDGET} tokens. Pass your token "
               f"shards (.bin) or text files with --pretrain_sources PATH ...")
    if message not in plan.warnings:
        plan.warnings.append(message)
    return files, files


def plan_phase(cfg, plan: Plan, *, pretrain_sources: list[str] | None = None) -> None:
    """Append generate -> mix -> prepare -> validate for the phase of ``cfg`` to ``plan``."""
    if "data_recipe" not in cfg:
        raise UserError("the config has no data_recipe (conf/train.yaml needs `- data_recipe: ${phase}` in its defaults)")
    phase, recipe = str(cfg.phase.name), to_container(cfg.data_recipe)
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
                        lambda st: run_mix(st, mix_inputs, mixed, seed, by_tokens, shares, counts, recipe),
                        [mixed], producers, work, notes=notes))
    inputs, val_split, split_fields = [mixed], float(prep["val_split"]), list(prep.get("split_by_fields") or [])
    if held_out:
        inputs.append(held_out[0])
        val_split, split_fields = held_out[2] / (held_out[1] + held_out[2]), split_fields + ["_meta.split"]
    _add_prepare(plan, phase, inputs, out_dir, prep, seed, [mix], work, val_split=val_split,
                 split_fields=split_fields, expected_val=held_out[2] if held_out else None,
                 validate=recipe.get("validate", True), max_samples=recipe.get("validate_max_samples"))
    mix_cfg = to_container(cfg.data_mix)
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
                    lambda st: run_hf_convert(s, out, count), [out], state_dir=work), None
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
    return Step(phase, f"generate {s.name}", display_command(GENERATOR_TOOLS[gen], argv, fallback),
                lambda st: run_generator(gen, argv, f"generate {where}", hint), outputs, state_dir=work,
                notes=notes), held_out


def plan_replay(cfg, plan: Plan, *, pretrain_sources: list[str] | None = None) -> None:
    """Append the steps that build the shared pre-training replay dataset."""
    rp = to_container(cfg.data_recipe.pretrain_replay)
    seed = int(rp["seed"])
    work, out_dir = Path(rp["work_dir"]), Path(rp["output_dir"])
    out, notes = work / "pretrain_replay.jsonl", []
    inputs, fallback = pretrain_inputs(pretrain_sources, plan)
    args = {**(rp.get("args") or {}), "inputs": inputs}
    count = _cap(int(rp["num_examples"]), fallback, args.get("max_tokens", 256), notes)
    argv = generator_argv("pretrain_replay", out, count, seed, args, "data_recipe.pretrain_replay")
    hint = " (the workspace stand-in is small: pass real text with --pretrain_sources)" if fallback else ""
    gen = plan.add(Step("pretrain_replay", "generate replay text", display_command(
        "generate_pretrain_replay.py", argv, fallback),
        lambda st: run_generator("pretrain_replay", argv, "generate pretrain replay", hint), [out], state_dir=work,
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
    from ..prepare import PrepareConfig

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
    prepared = plan.add(Step(group, "prepare", command, lambda st: run_prepare(st, cfg, expected_val), [out_dir],
                             upstream, work, target=True))
    if validate:
        vargv = ["--dataset", str(out_dir)] + (["--max_samples", str(max_samples)] if max_samples else [])
        plan.add(Step(group, "validate", python_command("validate_sft_dataset.py", vargv),
                      lambda st: run_validate(out_dir, max_samples), [], [prepared], work))


def _dep_phases(cfg, path_overrides: list[str], config_dir) -> tuple[list[str], list[Path]]:
    """Earlier phases whose datasets the data_mix of ``cfg`` needs and that do not exist yet,
    and the missing datasets that no phase builds."""
    mix, own = to_container(cfg.data_mix), Path(str(cfg.phase.dataset_dir)).resolve()
    wanted = [Path(c["path"]).resolve() for c in mix.get("components") or []]
    wanted += [Path(p).resolve() for p in (mix.get("eval_sets") or {}).values()]
    missing = [p for p in dict.fromkeys(wanted) if p != own and not p.exists()]
    if not missing:
        return [], []
    by_dir = {}
    for path in sorted((Path(config_dir) / "phase").glob("[!_]*.yaml")):  # _base.yaml is no phase
        other = compose_config([f"phase={path.stem}", *path_overrides], config_dir)
        by_dir[Path(str(other.phase.dataset_dir)).resolve()] = path.stem
    return [by_dir[p] for p in missing if p in by_dir], [p for p in missing if p not in by_dir]


def build_plan(overrides: list[str] = (), *, with_replay: bool = False, with_deps: bool = False,
               pretrain_sources: list[str] | None = None, config_dir: str | Path = CONF_DIR) -> Plan:
    """Compose the config for ``overrides`` and plan its phase (plus deps and replay when asked)."""
    cfg = compose_config(overrides, config_dir)
    plan = Plan()
    if with_deps:
        path_overrides = [o for o in overrides if o.lstrip("+~").startswith("paths.")]
        deps, unbuildable = _dep_phases(cfg, path_overrides, config_dir)
        replay_dir = Path(str(cfg.data_recipe.pretrain_replay.output_dir)).resolve()
        for path in unbuildable:
            if path == replay_dir:
                if not with_replay:
                    plan.warnings.append(f"the data_mix needs the pre-training replay {path}: add --with_replay")
                continue
            plan.warnings.append(f"the data_mix needs {path}, which does not exist and no phase builds; "
                                 "training will fail until it does (or use data_mix=none)")
        for dep in deps:
            plan_phase(compose_config([f"phase={dep}", *path_overrides], config_dir), plan,
                       pretrain_sources=pretrain_sources)
    plan_phase(cfg, plan, pretrain_sources=pretrain_sources)
    if with_replay:
        plan_replay(cfg, plan, pretrain_sources=pretrain_sources)
    return plan
