"""Command line of the gates (tools/eval_gates.py and its aliases).

    python tools/eval_gates.py --model PATH --phase N [--regression] --report out.json

Exit status: 0 the gate (and with --regression every earlier gate) passed, 1 it failed,
2 bad input (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse

from mypt_lightning.errors import UserError, run_cli
from mypt_lightning.inference.generation import load_policy

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def build_parser(prog: str, description: str, default_phase: str | None = None,
                 default_regression: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a Lightning .ckpt, an exported folder (runs/<phase>/export) or a legacy MyPT folder")
    parser.add_argument("--phase", default=default_phase, required=default_phase is None,
                        help="the gate to run: 1-6 or a phase name such as phase3_chat_sft"
                             + (f" (default {default_phase})" if default_phase else ""))
    parser.add_argument("--regression", action="store_true", default=default_regression,
                        help="also run every earlier phase's gate (must pass) and the OOD sets "
                             "data/eval_ood/phase{3..N}_*.jsonl (pass rates reported as warnings)")
    if default_regression:
        parser.add_argument("--no_regression", dest="regression", action="store_false",
                            help="run only the phase's own gate")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report (every prompt, output, verdict) here")
    parser.add_argument("--workspace", metavar="DIR", help="workspace folder or its docs/ folder (default: the bundled workspace)")
    parser.add_argument("--ood_dir", metavar="DIR", default=None, help="where the OOD sets are (default data/eval_ood)")
    parser.add_argument("--max_cases", type=int, default=None, help="run at most N cases per gate/set (quick check)")
    parser.add_argument("--batch_size", type=int, default=None, metavar="N",
                        help="cases decoded together; the agent gates batch each model turn over the cases "
                             "waiting for it (default: 16 on CPU, 64 on a GPU; 1 = one case at a time). "
                             "The report does not depend on it")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="weights dtype for inference (default float32)")
    parser.add_argument("--protocol", default="ours", choices=("ours", "mypt_chat", "mypt_tool"),
                        help="prompt format the model was trained on: ours (default), or a legacy MyPT one "
                             "(mypt_chat, mypt_tool: their prompts, system prompt and stop tokens)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's verdict as it is judged")
    return parser


def _print_case(where: str, result) -> None:
    first = result.output.replace("\n", " ")
    first = first if len(first) <= 100 else first[:97] + "..."
    line = f"  {result.verdict.upper():4} {where} {result.id}: {first!r}"
    if not result.passed:
        line += f"  <- {result.reason}"
    print(line, flush=True)


def main(argv: list[str] | None = None, *, prog: str = "eval_gates.py", description: str | None = None,
         default_phase: str | None = None, default_regression: bool = False) -> int:
    parser = build_parser(prog, description or __doc__, default_phase, default_regression)
    args = parser.parse_args(argv)
    return run_cli(lambda: _evaluate(args), prog)


def _evaluate(args: argparse.Namespace) -> int:
    from mypt_lightning.gates.runner import evaluate, parse_phase

    try:
        phase = parse_phase(args.phase)
    except ValueError as exc:
        raise UserError(f"--phase: {exc}") from None
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size: expected an integer >= 1, got {args.batch_size}")
    workspace = None
    if args.workspace:
        from mypt_lightning.inference.agent import open_workspace

        workspace = open_workspace(args.workspace)
    policy = load_policy(args.model, args.device, args.dtype)
    report = evaluate(policy, phase, regression=args.regression, workspace=workspace, ood_dir=args.ood_dir,
                      max_cases=args.max_cases, model_name=str(args.model),
                      progress=_print_case if args.verbose else None, protocol=args.protocol,
                      batch_size=args.batch_size)
    print(report.summary())
    if args.report:
        print(f"report: {report.write(args.report)}")  # a full disk or read-only place: one line, exit 2
    return EXIT_PASS if report.passed else EXIT_FAIL

__all__ = ["EXIT_ERROR", "EXIT_FAIL", "EXIT_PASS", "build_parser", "load_policy", "main"]
