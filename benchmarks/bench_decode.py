#!/usr/bin/env python
"""Decode throughput on CPU: our KV cache vs no cache vs transformers' generate, same weights.

    python benchmarks/bench_decode.py                       # d=256, 4 layers, 512 new tokens
    python benchmarks/bench_decode.py --n_embd 512 --n_layer 8 --repeats 3 --json out.json

One process, float32, greedy, batch 1, a 16-token prompt, exactly --new_tokens new tokens
(no stop ids, so every method decodes the same count). The transformers model is our
model exported through ``mypt_lightning.weights.hf_export`` (LlamaForCausalLM, SDPA attention,
its default dynamic KV cache). Rows:

    mypt kv cache      generation.generate (prefill once, then one token per forward)
    mypt no cache      generation.generate(use_kv_cache=False): the whole sequence every step
    hf generate        LlamaForCausalLM.generate(do_sample=False)

The KV-cache and HF rows run --repeats times, interleaved, and report the best run
(background load only ever adds time); the no-cache row runs once (it is the slow one).
The greedy tokens of all three are compared. Goals (issue 5): kv cache >= 5x no cache,
>= 1.0x hf generate.

Gates, batched vs one case at a time (issue 15)::

    python benchmarks/bench_decode.py --gates                    # phases 1 and 5, batch 16 vs 1
    python benchmarks/bench_decode.py --gates --batch_sizes 1 4 16 32 --gate_phases 1

runs the phase-1 and phase-5 gates on a random d=256, 4-layer model (block 1024) whose head
leans towards <myPT_toolcall>, </myPT_toolcall> and <myPT_eot>, so generations end at
different lengths and the agent loops of phase 5 take 1 to 3 model calls, as a partly
trained model's would. Each batch size runs --repeats times, interleaved, best run kept;
the reports (without timings) must be identical to --batch_size 1. Goal: phase 1 >= 4x
at the default batch size.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mypt_lightning.inference.generation import SamplingConfig, generate  # noqa: E402
from mypt_lightning.model import MyPT, MyPTConfig  # noqa: E402


def build_hf(model: MyPT):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mypt_lightning.weights.hf_export import hf_config_dict, to_hf_state_dict

    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(model), attn_implementation="sdpa"))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf.eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--new_tokens", type=int, default=512)
    p.add_argument("--prompt_tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--skip_no_cache", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--gates", action="store_true", help="benchmark the gates batched vs one case at a time")
    p.add_argument("--gate_phases", type=int, nargs="+", default=[1, 5])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=None,
                   help="--gates: batch sizes to time (default: 1 and the device default)")
    p.add_argument("--max_cases", type=int, default=None, help="--gates: cases per gate (default all)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gates:
        return bench_gates(args)

    torch.manual_seed(0)
    block = args.prompt_tokens + args.new_tokens
    model = MyPT(MyPTConfig.tiny(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer,
                                 block_size=block)).eval()
    with torch.no_grad():  # larger random weights: varied tokens instead of one repeated id
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.2)
    hf = build_hf(model)
    prompt = torch.randint(0, 50000, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, stop_ids=frozenset(), suppress_unused=False)
    n = args.new_tokens

    def ours(cache: bool):
        return generate(model, prompt, cfg.with_(use_kv_cache=cache)).tokens

    def theirs():
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        return out[0, len(prompt):].tolist()

    ours(True), theirs()  # warm-up (allocator, SDPA dispatch, transformers' lazy imports)
    kv_times, hf_times = [], []
    for _ in range(args.repeats):
        t, kv_tokens = timed(lambda: ours(True))
        kv_times.append(t)
        t, hf_tokens = timed(theirs)
        hf_times.append(t)
    rows = {"mypt kv cache": min(kv_times), "hf generate": min(hf_times)}
    same = {"hf generate": kv_tokens == hf_tokens}
    if not args.skip_no_cache:
        t, nc_tokens = timed(lambda: ours(False))
        rows["mypt no cache"] = t
        same["mypt no cache"] = nc_tokens == kv_tokens

    params = model.num_parameters()
    print(f"# decode, CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; d={args.n_embd} L={args.n_layer} ({params / 1e6:.1f}M params), "
          f"prompt {args.prompt_tokens}, {n} new tokens, greedy, float32")
    print("| method | seconds | tokens/s | kv cache speed-up | same tokens as kv cache |")
    print("|---|---|---|---|---|")
    kv = rows["mypt kv cache"]
    for name in ("mypt kv cache", "mypt no cache", "hf generate"):
        if name in rows:
            s = rows[name]
            print(f"| {name} | {s:.2f} | {n / s:.1f} | {s / kv:.2f}x | {same.get(name, '-')} |")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    nc = "not measured" if "mypt no cache" not in rows else verdict(rows["mypt no cache"] / kv >= 5)
    print(f"goals: kv >= 5x no cache: {nc}; kv >= 1x hf: {verdict(rows['hf generate'] / kv >= 1.0)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "seconds": rows, "same_tokens": same,
                                               "kv_times": kv_times, "hf_times": hf_times}, indent=2))
    return 0


def gate_model(args) -> MyPT:
    """Random weights (varied tokens) and a head biased towards the agent tags and <myPT_eot>."""
    from mypt_lightning.tokens.special_tokens import EOT, TOOLCALL_CLOSE, TOOLCALL_OPEN

    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, block_size=1024,
                                 lm_head_bias=True, tie_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name and "bias" not in name:
                param.normal_(0.0, 0.2)
        model.lm_head.bias.zero_()
        model.lm_head.bias[[TOOLCALL_OPEN, TOOLCALL_CLOSE, EOT]] = torch.tensor([5.0, 5.0, 4.5])
    return model.eval()


def bench_gates(args) -> int:
    from mypt_lightning.inference.batch_generation import default_batch_size
    from mypt_lightning.gates import GATES
    from mypt_lightning.inference.generation import ModelPolicy, SamplingConfig
    from mypt_lightning.workspace.store import Workspace

    model = gate_model(args)
    policy = ModelPolicy(model, SamplingConfig(temperature=0.0))
    workspace = Workspace()
    default = default_batch_size("cpu")
    sizes = args.batch_sizes or [1, default]
    if 1 not in sizes:
        sizes = [1] + sizes
    out = {}
    print(f"# gates, CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; d={args.n_embd} L={args.n_layer} ({model.num_parameters() / 1e6:.1f}M params), "
          f"greedy, float32, best of {args.repeats}")
    print("| gate | cases | model calls | new tokens | batch size | seconds | speed-up vs 1 | same report |")
    print("|---|---|---|---|---|---|---|---|")
    for phase in args.gate_phases:
        gate = GATES[phase]
        gate.run(policy, workspace=workspace, max_cases=2, batch_size=2)  # warm-up
        times = {b: [] for b in sizes}
        reports = {}
        for _ in range(args.repeats):
            for b in sizes:
                t, result = timed(lambda b=b: gate.run(policy, workspace=workspace, max_cases=args.max_cases,
                                                       batch_size=b))
                times[b].append(t)
                d = result.to_dict()
                d.pop("seconds")
                reports[b] = d
        gens = [g for c in reports[1]["cases"] for g in _generations(c)]
        calls, new_tokens = len(gens), sum(gens)
        base = min(times[1])
        out[phase] = {"cases": len(reports[1]["cases"]), "model_calls": calls, "new_tokens": new_tokens,
                      "seconds": {b: min(v) for b, v in times.items()}, "all_times": times,
                      "same_report": {b: reports[b] == reports[1] for b in sizes}}
        for b in sizes:
            s = min(times[b])
            print(f"| phase {phase} ({gate.name}) | {len(reports[1]['cases'])} | {calls} | {new_tokens} | {b} | "
                  f"{s:.2f} | {base / s:.2f}x | {reports[b] == reports[1]} |")
    if 1 in args.gate_phases and default in sizes:
        speed = min(out[1]["all_times"][1]) / min(out[1]["all_times"][default])
        print(f"goal: phase 1 >= 4x at the default batch size ({default}): {'met' if speed >= 4 else 'MISSED'} "
              f"({speed:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "gates": out}, indent=2))
    return 0


def _generations(case: dict) -> list[int]:
    """New-token counts of a case's model calls (agent gates keep every generation's text)."""
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    from mypt_lightning.inference.generation import encode_with_tags

    details = case["details"]
    if "generations" in details:
        tok = get_tokenizer()
        return [len(encode_with_tags(text, tok)) for text in details["generations"]]
    return [details["num_tokens"]]


if __name__ == "__main__":
    sys.exit(main())
