"""Generate a completion from a MyPT model.

    python tools/generate.py --model runs/phase1_format_lock/export \\
        --prompt "<myPT_system>You are MyPT.</myPT_system><myPT_user>Say hello.</myPT_user><myPT_assistant>"
    python tools/generate.py --model PATH --system "You are MyPT." --user "Say hello."
    python tools/generate.py --model PATH --user "Wie viel kostet ein Hotel?" --context "$(cat doc.txt)"
    python tools/generate.py --model PATH --batch_file prompts.jsonl --output outputs.jsonl
    python tools/generate.py --model OLD_MYPT_CHECKPOINT --protocol mypt_chat --user "Hi"

--prompt is a raw string in which tag text ("<myPT_user>", ...) becomes the tag tokens.
--system/--user/--context build the prompt with the wire protocol (the same serializer
that builds the training data; it ends with <myPT_assistant>). Without --system the prompt
carries the system prompt the model was trained with: the tier of --phase (or of the phase
named in the model path; phase 1's "You are MyPT." otherwise), or with --protocol
mypt_chat/mypt_tool the original MyPT default; --system "" sends none. --protocol mypt_chat
/ mypt_tool build the prompt as the original MyPT scripts did and also stop at
</myPT_assistant>. The generated text is
streamed to stdout with tags shown as text; a one-line summary (tokens, stop reason,
speed) goes to stderr.

--batch_file FILE generates for many prompts at once (decoded together, --batch_size at
a time; greedy outputs are the same as one by one). FILE is JSONL, one object per line:
{"prompt": "<raw text with tags>"} or {"user": "...", "system": "...", "context": "..."}
(system and context optional; --system is the default system). One JSON line per prompt
goes to stdout or --output: {"line", "output", "num_tokens", "stop_reason"}.

Greedy by default; --temperature/--top_k/--top_p/
--repetition_penalty/--seed sample. Generation stops at <myPT_eot> (and <|endoftext|>),
also at </myPT_assistant> with --stop_at_assistant_close, or after --max_new_tokens.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mypt_lightning.errors import UserError, as_user_errors, run_cli


def build_parser() -> argparse.ArgumentParser:
    from mypt_lightning.inference.generation import add_sampling_arguments

    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a Lightning .ckpt, an exported folder or a legacy MyPT folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="raw prompt text; tag strings become tag tokens")
    src.add_argument("--user", help="the user message (the prompt is built with the protocol)")
    src.add_argument("--batch_file", metavar="FILE", help="JSONL of prompts to generate for (see above)")
    parser.add_argument("--system", default=None,
                        help="system prompt for --user (default: the one the model was trained with; \"\" for none)")
    parser.add_argument("--context", default=None, help="<myPT_user_context> for --user")
    parser.add_argument("--stop_at_assistant_close", action="store_true", help="also stop at </myPT_assistant>")
    parser.add_argument("--no_stream", action="store_true", help="print the text at the end instead of streaming")
    parser.add_argument("--show_prompt", action="store_true", help="print the prompt (as text) before the output")
    parser.add_argument("--batch_size", type=int, default=None, metavar="N",
                        help="--batch_file: prompts decoded together (default 16 on CPU, 64 on a GPU)")
    parser.add_argument("--output", metavar="FILE", help="--batch_file: write the JSONL results here, not to stdout")
    from mypt_lightning.tokens.protocol_profiles import add_protocol_arguments

    add_protocol_arguments(parser)
    add_sampling_arguments(parser)
    return parser


def read_batch_file(path: str, tok, default_system: str | None, profile=None) -> list[tuple[int, list[int]]]:
    """(line number, prompt ids) for every non-blank line of the JSONL ``path``; a bad line is
    a UserError naming it."""
    from mypt_lightning.inference.generation import encode_with_tags
    from mypt_lightning.jsonio import iter_lines, loads_strict
    from mypt_lightning.tokens.protocol_profiles import get_profile

    profile = get_profile(profile)
    if not Path(path).is_file():
        raise UserError(f"--batch_file {path}: no such file")
    prompts = []
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        record = loads_strict(line, where)
        if not isinstance(record, dict) or ("prompt" in record) == ("user" in record):
            raise UserError(f"{where}: expected an object with \"prompt\" (raw text) or \"user\" "
                            "(+ optional \"system\", \"context\")")
        fields = {k: record.get(k) for k in ("prompt", "user", "system", "context") if record.get(k) is not None}
        bad = [k for k, v in fields.items() if not isinstance(v, str)]
        if bad:
            raise UserError(f"{where}: {', '.join(bad)} must be a string")
        if "prompt" in fields:
            ids = encode_with_tags(fields["prompt"], tok)
        else:
            message = {"role": "user", "content": fields["user"]}
            if fields.get("context"):
                message["context"] = fields["context"]
            ids = profile.build_prompt([message], system=fields.get("system", default_system) or None, tokenizer=tok)
        if not ids:
            raise UserError(f"{where}: the prompt is empty")
        prompts.append((lineno, ids))
    if not prompts:
        raise UserError(f"--batch_file {path}: no prompts in it")
    return prompts


def run_batch(args, config, tok, profile, system: str | None) -> int:
    """--batch_file: every prompt decoded in batches, one JSON line of results each."""
    import json

    from mypt_lightning.inference.batch_generation import generate_batch
    from mypt_lightning.inference.generation import load_inference_model

    prompts = read_batch_file(args.batch_file, tok, system, profile)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size: expected an integer >= 1, got {args.batch_size}")
    model = load_inference_model(args.model, args.device, args.dtype)
    start = time.perf_counter()
    results = generate_batch(model, [ids for _, ids in prompts], config, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    lines = [json.dumps({"line": lineno, "output": tok.decode(r.tokens), "num_tokens": r.num_tokens,
                         "stop_reason": r.stop_reason}, ensure_ascii=False) for (lineno, _), r in zip(prompts, results)]
    text = "\n".join(lines) + "\n"
    if args.output:
        from data_modules.atomic_write import write_text_atomic

        write_text_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    total = sum(r.num_tokens for r in results)
    print(f"[{len(results)} prompts, {total} tokens in {seconds:.1f} s, {total / max(seconds, 1e-9):.1f} tokens/s]",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _generate(args), "generate.py", interrupted="generation stopped")


def _generate(args: argparse.Namespace) -> int:
    if args.prompt is not None and (args.system is not None or args.context is not None):
        raise UserError("--system/--context go with --user, not with --prompt")
    if args.batch_file is not None and args.context is not None:
        raise UserError("--context goes with --user; give each line of --batch_file its own \"context\"")
    if args.batch_file is None and (args.output is not None or args.batch_size is not None):
        raise UserError("--output/--batch_size go with --batch_file")
    from mypt_lightning.inference.generation import IncrementalDecoder, encode_with_tags, generate, load_inference_model
    from mypt_lightning.inference.generation import sampling_from_args
    from mypt_lightning.tokens.protocol_profiles import get_profile, trained_system_prompt
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    with as_user_errors(ValueError):  # a bad sampling setting or prompt
        profile = get_profile(args.protocol)
        extra = {"stop_ids": profile.stop_ids(args.stop_at_assistant_close)} if profile.legacy else {}
        config = sampling_from_args(args, stop_at_assistant_close=args.stop_at_assistant_close, **extra)
        tok = get_tokenizer()
        system = args.system if args.system is not None else trained_system_prompt(profile, args.model, args.phase)
        if args.batch_file is not None:
            return run_batch(args, config, tok, profile, system)
        if args.prompt is not None:
            prompt = encode_with_tags(args.prompt, tok)
        else:
            message = {"role": "user", "content": args.user}
            if args.context:
                message["context"] = args.context
            prompt = profile.build_prompt([message], system=system or None, tokenizer=tok)
        model = load_inference_model(args.model, args.device, args.dtype)
        if args.show_prompt:
            print(tok.decode(prompt), flush=True)
        decoder = IncrementalDecoder(tok)
        on_token = None if args.no_stream else (lambda t: print(decoder.push(t), end="", flush=True))
        start = time.perf_counter()
        result = generate(model, prompt, config, on_token=on_token)
        seconds = time.perf_counter() - start
    print(tok.decode(result.tokens) if args.no_stream else decoder.flush(), flush=True)
    print(f"[{result.num_tokens} tokens, stop: {result.stop_reason}, {result.num_tokens / max(seconds, 1e-9):.1f} "
          f"tokens/s, prompt {result.prompt_length} tokens]", file=sys.stderr)
    return 0
