"""Remove duplicate episodes from JSONL files (first occurrence wins, order kept).

    python tools/deduplicate_episodes.py --input a.jsonl [--input b.jsonl] --output dedup.jsonl \
        [--mode exact|user_message|both] [--max_per_key 1]

  exact         same system, messages and language (_-prefixed metadata ignored)
  user_message  same user messages ignoring case, punctuation and spacing (replay: same
                text); --max_per_key K keeps up to K episodes per user message
Bad records: FILE:LINE: FIELD: REASON; --on-error stop (default) or skip.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="deduplicate_episodes.py")
    p.add_argument("--input", action="append", required=True, metavar="JSONL", help="input file (repeatable)")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--mode", choices=("exact", "user_message", "both"), default="exact",
                   help="what counts as a duplicate (default exact)")
    p.add_argument("--max_per_key", type=int, default=1, metavar="K",
                   help="user_message mode: keep up to K episodes per normalised user message (default 1)")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from collections import Counter

        from mypt_lightning.data_prep.dedup import deduplicate
        from mypt_lightning.data_prep.jsonl import ErrorLog, iter_records, write_jsonl

        errors, stats = ErrorLog(args.on_error), Counter()
        write_jsonl(args.output, deduplicate(iter_records(args.input, errors), args.mode, args.max_per_key, stats))
        print(f"read {stats['read']}, kept {stats['kept']} -> {args.output}; dropped: "
              f"{stats['dropped_exact_duplicate']} exact duplicates, {stats['dropped_same_user_message']} "
              f"over the limit per user message")
        if errors.count:
            print(errors.summary())
        return 0

    return cli.run(go, "deduplicate_episodes")
