"""Convert a Hugging Face dataset (hub name or local file/folder) into episode JSONL.

    python tools/convert_hf_dataset.py --dataset OpenAssistant/oasst2 --output oasst2.jsonl \\
        --languages en de --max_examples 10000

Layouts, detected from the columns (or forced with --layout):
  oasst        OASST2 message trees, linearised along the best-ranked replies (multi-turn
               threads kept whole; --min_turns 2 keeps only those with >= 2 user turns)
  alpaca       instruction / input / output (e.g. mayflowergmbh/alpaca-gpt4_de, LeoLM/OpenSchnabeltier)
  sharegpt     conversations: [{from, value}] (e.g. avemio German-RAG SFT ShareGPT)
  messages     messages: [{role, content}] (e.g. allenai/Dolci-Instruct-SFT, ultra-chat_de)
  dolci_tools  messages with function_calls / environment turns (allenai/Dolci-Instruct-SFT-Tool-Use):
               calls become assistant_toolcall, outputs toolresult
  glaive       system + chat text with <functioncall> (German function-calling sets)

Rows that cannot become a valid episode are skipped and counted by reason in the summary.
Without network access pass a local path (.jsonl, .json, .parquet, .csv, or a folder).
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli

LAYOUTS = ("oasst", "alpaca", "sharegpt", "messages", "dolci_tools", "glaive")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="convert_hf_dataset.py")
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH", help="hub dataset name or local file/folder")
    p.add_argument("--output", required=True, metavar="JSONL", help="episode file to write")
    p.add_argument("--languages", nargs="+", metavar="LANG",
                   help="keep only these languages (row's lang/language field, else a stop-word guess)")
    p.add_argument("--max_examples", type=int, metavar="N", help="stop after N episodes")
    p.add_argument("--layout", choices=LAYOUTS, help="force a layout instead of detecting it")
    p.add_argument("--split", default="train", help="dataset split (default train)")
    p.add_argument("--config", help="dataset configuration / subset name")
    p.add_argument("--min_turns", type=int, default=1, metavar="N", help="keep episodes with >= N user turns")
    p.add_argument("--system_prompt", metavar="TEXT",
                   help="system prompt for every episode (default: the dataset's own, if any)")
    p.add_argument("--drop_tool_definitions", action="store_true",
                   help="dolci_tools: do not copy the tool specifications into the system prompt")
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.hf_convert import convert_dataset

        report = convert_dataset(args.dataset, args.output, split=args.split, config=args.config,
                                 layout=args.layout, languages=args.languages, max_examples=args.max_examples,
                                 system_prompt=args.system_prompt, min_turns=args.min_turns,
                                 keep_tool_definitions=not args.drop_tool_definitions)
        langs = ", ".join(f"{k} {v}" for k, v in report["languages"].most_common())
        print(f"wrote {report['episodes']} episodes ({langs}) to {report['output']} [layout {report['layout']}]")
        total = sum(report["skipped"].values())
        if total:
            print(f"skipped {total} rows:")
            for reason, n in report["skipped"].most_common():
                print(f"  {n:>8}  {reason}")
        return 0

    return cli.run(go, "convert_hf_dataset")
