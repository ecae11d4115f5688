#!/usr/bin/env python
"""Generate a completion from a MyPT model.

    python tools/generate.py --model runs/phase1_format_lock/export \\
        --prompt "<myPT_system>You are MyPT.</myPT_system><myPT_user>Say hello.</myPT_user><myPT_assistant>"
    python tools/generate.py --model PATH --system "You are MyPT." --user "Say hello."
    python tools/generate.py --model PATH --user "Wie viel kostet ein Hotel?" --context "$(cat doc.txt)"
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
speed) goes to stderr. Greedy by default; --temperature/--top_k/--top_p/
--repetition_penalty/--seed sample. Generation stops at <myPT_eot> (and <|endoftext|>),
also at </myPT_assistant> with --stop_at_assistant_close, or after --max_new_tokens.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time


from mypt_lightning.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from mypt_lightning.inference.generation import add_sampling_arguments

    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a Lightning .ckpt, an exported folder or a legacy MyPT folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="raw prompt text; tag strings become tag tokens")
    src.add_argument("--user", help="the user message (the prompt is built with the protocol)")
    parser.add_argument("--system", default=None,
                        help="system prompt for --user (default: the one the model was trained with; \"\" for none)")
    parser.add_argument("--context", default=None, help="<myPT_user_context> for --user")
    parser.add_argument("--stop_at_assistant_close", action="store_true", help="also stop at </myPT_assistant>")
    parser.add_argument("--no_stream", action="store_true", help="print the text at the end instead of streaming")
    parser.add_argument("--show_prompt", action="store_true", help="print the prompt (as text) before the output")
    from mypt_lightning.tokens.protocol_profiles import add_protocol_arguments

    add_protocol_arguments(parser)
    add_sampling_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.prompt is not None and (args.system is not None or args.context is not None):
        print("generate.py: --system/--context go with --user, not with --prompt", file=sys.stderr)
        return 2
    from mypt_lightning.inference.generation import IncrementalDecoder, encode_with_tags, generate, load_inference_model
    from mypt_lightning.inference.generation import sampling_from_args
    from mypt_lightning.tokens.protocol import EpisodeError
    from mypt_lightning.tokens.protocol_profiles import get_profile, trained_system_prompt
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    try:
        profile = get_profile(args.protocol)
        extra = {"stop_ids": profile.stop_ids(args.stop_at_assistant_close)} if profile.legacy else {}
        config = sampling_from_args(args, stop_at_assistant_close=args.stop_at_assistant_close, **extra)
        tok = get_tokenizer()
        if args.prompt is not None:
            prompt = encode_with_tags(args.prompt, tok)
        else:
            message = {"role": "user", "content": args.user}
            if args.context:
                message["context"] = args.context
            system = args.system if args.system is not None else trained_system_prompt(profile, args.model, args.phase)
            prompt = profile.build_prompt([message], system=system or None, tokenizer=tok)
        model = load_inference_model(args.model, args.device, args.dtype)
        if args.show_prompt:
            print(tok.decode(prompt), flush=True)
        decoder = IncrementalDecoder(tok)
        on_token = None if args.no_stream else (lambda t: print(decoder.push(t), end="", flush=True))
        start = time.perf_counter()
        result = generate(model, prompt, config, on_token=on_token)
        seconds = time.perf_counter() - start
    except (UserError, EpisodeError, ValueError) as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    print(tok.decode(result.tokens) if args.no_stream else decoder.flush(), flush=True)
    print(f"[{result.num_tokens} tokens, stop: {result.stop_reason}, {result.num_tokens / max(seconds, 1e-9):.1f} "
          f"tokens/s, prompt {result.prompt_length} tokens]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
