"""Rewrite a share of the user messages of an episode file with rule-based paraphrases.

    python tools/diversify_user_messages.py --input episodes.jsonl --output diverse.jsonl \
        [--probability 0.5] [--seed 0]

Same records, same order; each record's user messages are paraphrased with the given
probability (English/German phrase swaps, polite openers/closers; quoted spans, code and
assistant answers untouched). Changed records get _meta.augmented = "diversified".
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="diversify_user_messages.py")
    p.add_argument("--input", required=True, metavar="JSONL")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--probability", type=float, default=0.5, help="share of records to rewrite (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.augment import diversify
        from mypt_lightning.data_prep.jsonl import ErrorLog, iter_records, write_jsonl
        from mypt_lightning.errors import UserError

        if not 0.0 <= args.probability <= 1.0:
            raise UserError("--probability must be in [0, 1]")
        errors, counts = ErrorLog(args.on_error), {"changed": 0, "total": 0}

        def records():
            for record, changed in diversify((r for _, r in iter_records([args.input], errors)),
                                             args.probability, args.seed):
                counts["changed"] += changed
                counts["total"] += 1
                yield record

        write_jsonl(args.output, records())
        print(f"rewrote {counts['changed']} of {counts['total']} records -> {args.output}")
        if errors.count:
            print(errors.summary())
        return 0

    return cli.run(go, "diversify_user_messages")
