"""Chat with a MyPT model in the terminal (multi-turn, streaming), optionally as a tool-using agent.

    python tools/chat.py --model runs/phase4_multiturn/export
    python tools/chat.py --model runs/phase6_agentic_rag/export --agent --workspace workspace/
    python tools/chat.py --model PATH --show_think --temperature 0     # show <myPT_think>, greedy

Type a message and press Enter; the reply streams as it is generated. Think blocks are
hidden unless --show_think; tool calls, tool results and citations are marked.
Commands: /reset starts a new conversation, /exit or /quit (or Ctrl-D) leaves.
With --agent the model's <myPT_toolcall>s run against the workspace (search, list_docs,
get_doc, summarize) and the results go back to the model (at most --max_steps model calls
per turn); without it a tool call is answered with an error saying tools are off.
Input can be piped: `printf 'Hello\\n/exit\\n' | python tools/chat.py --model PATH`.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from mypt_lightning.errors import as_user_errors, run_cli


def build_parser() -> argparse.ArgumentParser:
    from mypt_lightning.inference.generation import add_sampling_arguments

    parser = argparse.ArgumentParser(prog="chat.py", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a Lightning .ckpt, an exported folder or a legacy MyPT folder")
    parser.add_argument("--agent", action="store_true", help="execute tool calls against the workspace")
    parser.add_argument("--workspace", default=None, metavar="DIR",
                        help="workspace folder (its docs/ subfolder is used if present; default: the bundled one)")
    parser.add_argument("--system", default=None,
                        help="system prompt (default: the one the model was trained with: the tier of --phase or of "
                             "the phase in the model path, the chat prompt otherwise, the agentic one with --agent; "
                             "with --protocol mypt_chat/mypt_tool the original MyPT default; \"\" for none)")
    parser.add_argument("--show_think", action="store_true", help="show the model's <myPT_think> blocks")
    parser.add_argument("--max_steps", type=int, default=6, help="model calls per turn with --agent (default 6)")
    from mypt_lightning.tokens.protocol_profiles import add_protocol_arguments

    add_protocol_arguments(parser)
    add_sampling_arguments(parser, temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.1, max_new_tokens=512)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _chat(args), "chat.py", interrupted="chat ended")


def _chat(args: argparse.Namespace) -> int:
    from mypt_lightning.inference.agent import CHAT_HELP, AgentSession, chat_loop, open_workspace
    from mypt_lightning.inference.generation import ModelPolicy, load_inference_model, sampling_from_args
    from mypt_lightning.tokens.protocol_profiles import get_profile, phase_from_path, trained_system_prompt
    from mypt_lightning.tokens.system_prompts import AGENTIC_STANDARD_PROMPT, CHAT_SYSTEM_PROMPT

    with as_user_errors(ValueError):  # a bad sampling setting
        sampling = sampling_from_args(args)
        workspace = open_workspace(args.workspace) if args.agent else None
        model = load_inference_model(args.model, args.device, args.dtype)
        profile = get_profile(args.protocol)
        if args.system is not None:
            system = args.system
        elif profile.legacy or args.phase is not None or phase_from_path(args.model) is not None:
            system = trained_system_prompt(profile, args.model, args.phase)
        else:
            system = AGENTIC_STANDARD_PROMPT if args.agent else CHAT_SYSTEM_PROMPT
        session = AgentSession(ModelPolicy(model, sampling), workspace, system or None,
                               max_steps=args.max_steps if args.agent else 2, max_new_tokens=args.max_new_tokens,
                               profile=profile)
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not valid text become U+FFFD, not a crash
        sys.stdin.reconfigure(errors="replace")

    def read_line(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return None if line == "" else line

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    mode = f"agent, workspace {workspace.docs_dir}" if workspace is not None else "chat"
    print(f"[{args.model}: {mode}; {CHAT_HELP}]", file=sys.stderr)
    try:
        chat_loop(session, read_line, write, show_think=args.show_think)
    except KeyboardInterrupt:
        print()
    return 0
