"""Tokenize JSONL episodes (chat, tool and replay alike) into a binary episode dataset.

    python tools/prepare_sft.py --input A.jsonl [--input B.jsonl ...] --output_dir DIR \\
        [--val_split 0.05] [--enable_packing --pack_block_size 4096] [--pack_by_field _meta.operator] \\
        [--weighted_mask] [--on-error stop|skip] [--truncate head|tail] \\
        [--protocol ours|mypt_chat|mypt_tool [--system_prompt TEXT | --no_system_prompt] [--enable_rag_tags]]

Every record is validated against the episode schema and serialized by the one wire
protocol (tags by id, content as plain text): assistant content trains, everything else is
masked, <myPT_eot> ends every turn; replay records ({"_replay": true, "text": ...}) train on
every token. Tokenization runs on all cores, the input is streamed (memory stays flat) and
the dataset appears in DIR only when complete (written beside it, then renamed).

Validation split: deterministic and by conversation; episodes that share a user message
(ignoring case, punctuation, spacing) always land in the same split. The summary reports
train/val overlap of user messages and of operator payloads (_meta.payload).

Packing: best-fit decreasing, at most 255 episodes per block, segment ids keep episodes
apart. An episode longer than the block (or --max_length when unpacked) is rejected and
counted, or cut to the limit with --truncate head (keep the first tokens; also --truncate_long)
or --truncate tail (keep the last ones, as MyPT's packer did); the summary names cut episodes.

Legacy MyPT data: --protocol mypt_chat writes what scripts/sft/prepare_chat_sft.py wrote
(its fixed system prompt unless --system_prompt/--no_system_prompt, one <myPT_eot> per
conversation, context/think/cite only with --enable_rag_tags), --protocol mypt_tool what
prepare_tool_sft.py wrote ("\\n" after every block); packed legacy blocks pad with <myPT_eot>.
See docs/coming_from_mypt.md.

Bad records are reported as FILE:LINE: FIELD: REASON. Default: stop before writing
anything; --on-error skip skips and counts them. A full disk or an unwritable output is one
line naming it. SIGTERM and Ctrl-C stop cleanly: no temporary files, no worker left, an
existing output untouched. Exit status: 0 written, 2 bad input/flags/output, 130 Ctrl-C,
143 SIGTERM. See docs/data_preparation.md.
"""

from __future__ import annotations

import sys

from mypt_lightning.data_prep import cli


def build_parser():
    p = cli.parser(__doc__, prog="prepare_sft.py")
    p.add_argument("--input", action="append", required=True, metavar="JSONL",
                   help="episode file (repeat for several; they are concatenated in this order)")
    p.add_argument("--output_dir", required=True, metavar="DIR", help="dataset directory to create")
    p.add_argument("--val_split", type=float, default=0.05, metavar="F",
                   help="fraction of episodes for the val split, by conversation (default 0.05; 0 = no val)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split (default 0)")
    p.add_argument("--enable_packing", action="store_true",
                   help="pack episodes into blocks of --pack_block_size tokens (best-fit decreasing, "
                        "<= 255 per block, segment ids isolate episodes)")
    p.add_argument("--pack_block_size", type=int, default=4096, metavar="N",
                   help="block size in tokens when packing; also the longest episode allowed (default 4096)")
    p.add_argument("--pack_by_field", metavar="FIELD",
                   help="pack each value of this record field separately, e.g. _meta.operator")
    p.add_argument("--max_length", type=int, metavar="N",
                   help="unpacked datasets: longest episode allowed (default: no limit)")
    p.add_argument("--truncate_long", action="store_true",
                   help="cut episodes longer than the limit to the limit instead of rejecting them "
                        "(rejected/truncated episodes are counted in the summary and the metadata)")
    p.add_argument("--truncate", choices=("head", "tail"), default=None,
                   help="cut episodes longer than the limit instead of rejecting them: head keeps the first "
                        "tokens (= --truncate_long), tail the last ones (the original MyPT packer's choice)")
    p.add_argument("--protocol", default="ours", choices=("ours", "mypt_chat", "mypt_tool"),
                   help="serialization: ours (default), or a legacy MyPT script's: mypt_chat "
                        "(prepare_chat_sft.py), mypt_tool (prepare_tool_sft.py)")
    p.add_argument("--system_prompt", metavar="TEXT", default=None,
                   help="legacy profiles: the system prompt of every episode (mypt_chat default: \"You are MyPT.\"; "
                        "mypt_tool default: each record's own)")
    p.add_argument("--no_system_prompt", action="store_true", help="legacy profiles: no system block")
    p.add_argument("--enable_rag_tags", action="store_true",
                   help="mypt_chat: serialize user context, think, cite and assistant_context (mypt_tool always does)")
    p.add_argument("--weighted_mask", action="store_true",
                   help="also write mask_weighted.bin with the docs/design.md section 1 weights "
                        "(content 1.0, think/cite tags 1.5, </myPT_assistant>, <myPT_eot>, toolcall tags 2.0)")
    cli.add_on_error(p)
    p.add_argument("--split_by_field", action="append", default=[], metavar="FIELD",
                   help="also keep episodes sharing this field's value in one split (e.g. _meta.payload); "
                        "repeatable")
    p.add_argument("--overlap_field", action="append", default=None, metavar="FIELD",
                   help="field whose train/val overlap is reported (default: _meta.payload); repeatable")
    p.add_argument("--num_workers", type=int, metavar="N",
                   help="tokenizer processes (default: all cores; 1 for inputs under 1 MB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in DIR (atomically)")
    p.add_argument("--no_progress", action="store_true", help="never show progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.prepare import DEFAULT_OVERLAP_FIELDS, PrepareConfig, prepare_sft

        cfg = PrepareConfig(
            inputs=args.input, output_dir=args.output_dir, val_split=args.val_split, seed=args.seed,
            packing=args.enable_packing, block_size=args.pack_block_size, max_length=args.max_length,
            pack_by_field=args.pack_by_field, weighted=args.weighted_mask, on_error=args.on_error,
            truncate_long=args.truncate_long, split_by_fields=args.split_by_field,
            overlap_fields=args.overlap_field if args.overlap_field is not None else list(DEFAULT_OVERLAP_FIELDS),
            num_workers=args.num_workers, overwrite=args.overwrite, truncate=args.truncate,
            protocol=args.protocol, system_prompt=args.system_prompt, no_system_prompt=args.no_system_prompt,
            rag_tags=args.enable_rag_tags,
            progress=False if args.no_progress else None, command=cli.command_line(argv))
        result = prepare_sft(cfg)
        print(result.summary)
        return 0

    from data_modules.process_lifetime import SIGTERM_EXIT_CODE, Terminated, stop_signals_raise

    # SIGTERM (a scheduler, `timeout`, `kill`) becomes an exception like Ctrl-C, so the
    # cleanup in prepare_sft's `finally` blocks runs instead of the process vanishing.
    try:
        with stop_signals_raise():
            return cli.run(go, "prepare_sft")
    except Terminated:
        print("prepare_sft: stopped by SIGTERM; temporary files removed (an output appears only when complete)",
              file=sys.stderr)
        return SIGTERM_EXIT_CODE
