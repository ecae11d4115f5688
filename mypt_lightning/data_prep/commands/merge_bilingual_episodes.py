"""Merge an English and a German episode file into one bilingual file, pairs kept together.

    python tools/merge_bilingual_episodes.py --en en.jsonl --de de.jsonl --output bilingual.jsonl \
        [--mode interleave|concat]

Records are paired by _meta.translation_of (set by recombine_translations.py), else by
position when both files have the same length. Each pair gets one _meta.pair_id; pass
prepare_sft --split_by_field _meta.pair_id so a translation never sits in val while its
original is in train. interleave (default) writes EN1 DE1 EN2 DE2 ..., concat all EN then all DE.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="merge_bilingual_episodes.py")
    p.add_argument("--en", required=True, metavar="JSONL", help="first-language episodes (the originals)")
    p.add_argument("--de", required=True, metavar="JSONL", help="second-language episodes (translations)")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--mode", choices=("interleave", "concat"), default="interleave")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.translation import merge_bilingual

        stats = merge_bilingual(args.en, args.de, args.output, args.mode, args.on_error)
        print(f"wrote {stats['written']} episodes ({stats['pairs']} pairs, {stats['unpaired']} unpaired) -> {args.output}")
        return 0

    return cli.run(go, "merge_bilingual_episodes")
