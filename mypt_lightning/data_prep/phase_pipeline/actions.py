"""What the steps do when they run, in-process: a generator's ``main``, ``convert_dataset``,
the mix (by records, or by measured tokens for phase 1b), ``prepare_sft`` and the dataset checks."""

from __future__ import annotations

import importlib
from pathlib import Path

from mypt_lightning.errors import UserError

from ..jsonl import iter_lines, parse_line
from .commands import python_command
from .plan import Step
from .recipe import Source
from .skipping import FINGERPRINT_TAG


def run_generator(generator: str, argv: list[str], label: str, hint: str = "") -> str | None:
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


def run_hf_convert(s: Source, out: Path, count: int) -> str:
    from ..hf_convert import convert_dataset

    kwargs = {k: s.args[k] for k in ("languages", "layout", "split", "config", "min_turns", "system_prompt")
              if s.args.get(k) is not None}
    if s.args.get("drop_tool_definitions"):
        kwargs["keep_tool_definitions"] = False
    report = convert_dataset(s.dataset, out, max_examples=count, **kwargs)
    short = f"; only {report['episodes']} of {count} wanted: its share falls short" if report["episodes"] < count else ""
    return f"converted {report['episodes']} episodes from {s.dataset}{short}"


def _record_text(line: bytes, where: str) -> str:
    record = parse_line(line, where, validate=False)  # the one JSONL reader: a bad line is named
    if record.get("_replay") is True:
        return record["text"]
    return " ".join(str(m.get(k, "")) for m in record.get("messages", []) for k in ("content", "context", "think", "cite"))


def measure_tokens(path: Path, sample: int = 2000) -> tuple[int, int]:
    """(records, tokens) of a JSONL file: exact up to ``sample`` records, else extrapolated by characters."""
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    n = sum(1 for _ in iter_lines(path))
    step, chars, texts = max(1, n // sample), 0, []
    for i, (number, line) in enumerate(iter_lines(path)):
        text = _record_text(line, f"{path}:{number}")
        chars += len(text)
        if i % step == 0:
            texts.append(text)
    tokens = sum(len(ids) for ids in get_tokenizer().encode_batch_text(texts))
    return n, tokens if step == 1 else round(chars * tokens / max(1, sum(map(len, texts))))


def run_mix(step: Step, mix_inputs: list, mixed: Path, seed: int, by_tokens: bool, shares: dict, counts: dict,
            recipe: dict) -> str:
    from ..jsonl import check_input_files
    from ..mixing import MixInput, format_report, mix_jsonl

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


def run_prepare(step: Step, cfg, expected_val: int | None) -> str:
    from ..prepare import prepare_sft

    cfg.command = f"{step.command}  {FINGERPRINT_TAG}{step.fingerprint}"  # kept in dataset_metadata.json
    result = prepare_sft(cfg)
    got = result.metadata["counts"].get("val_episodes", 0)
    if expected_val is not None and got != expected_val:
        raise UserError(f"prepare: the held-out val file should become the val split ({expected_val} episodes), "
                        f"got {got}; see {cfg.output_dir}/dataset_metadata.json")
    return result.summary


def run_validate(dataset_dir: Path, max_samples: int | None) -> str:
    from ..validate import format_results, validate_dataset

    results = validate_dataset(dataset_dir, max_samples=max_samples)
    failed = [r for r in results if not r.passed]
    if failed:
        first = next((e for r in failed for e in r.examples), failed[0].not_run or "")
        raise UserError(f"{dataset_dir} failed the checks {[r.name for r in failed]} (first: {first}); "
                        f"details: python tools/validate_sft_dataset.py --dataset {dataset_dir}")
    return format_results(results) + "\nall checks passed"
