"""Grow an episode file to a target count with rule-based paraphrases of its user messages.

    python tools/augment_episodes_paraphrase.py --input gold.jsonl --output gold_aug.jsonl \
        --target_count 1000 [--seed 0]

English and German phrase swaps ("Can you"/"Could you", "Erkläre"/"Beschreibe", ...),
plus polite openers/closers; quoted spans and code are never changed and assistant
answers stay as they are. Output: the originals, then distinct paraphrased copies marked
_meta.augmented = "paraphrase". Originals and copies share _meta.paraphrase_of; use
prepare_sft --split_by_field _meta.paraphrase_of to keep each family in one split.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="augment_episodes_paraphrase.py")
    p.add_argument("--input", required=True, metavar="JSONL")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--target_count", type=int, required=True, metavar="N", help="records in the output")
    p.add_argument("--seed", type=int, default=0)
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.augment import augment_to_target
        from mypt_lightning.data_prep.jsonl import ErrorLog, iter_records, write_jsonl

        errors = ErrorLog(args.on_error)
        records = [r for _, r in iter_records([args.input], errors)]
        out, stats = augment_to_target(records, args.target_count, args.seed)
        write_jsonl(args.output, out)
        print(f"{stats['originals']} originals + {stats['added']} paraphrases = {len(out)} records -> {args.output}")
        if stats["shortfall"]:
            print(f"note: {stats['shortfall']} short of --target_count: the rules found no further distinct paraphrases")
        if errors.count:
            print(errors.summary())
        return 0

    return cli.run(go, "augment_episodes_paraphrase")
