"""Mix JSONL episode files by ratio into one file (with provenance in _meta.source).

    python tools/mix_sft_jsonl.py --inputs a.jsonl:0.7 b.jsonl:0.3 --output m.jsonl --shuffle --seed 0

A ratio multiplies the file's record count: below 1.0 a seeded sample without replacement,
1.0 every record, above 1.0 oversampling (2.5 = every record twice plus a seeded half).
Every record is validated (bad ones: FILE:LINE: FIELD: REASON; --on-error stop|skip).
The output is written atomically; the same inputs, ratios and seed give the same bytes.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="mix_sft_jsonl.py")
    p.add_argument("--inputs", nargs="+", required=True, metavar="FILE[:RATIO]",
                   help="input files with their ratio (default 1.0)")
    p.add_argument("--output", required=True, metavar="JSONL", help="mixed file to write")
    p.add_argument("--shuffle", action="store_true", help="shuffle the output (seeded); default: input order")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling (default 0)")
    p.add_argument("--source_field", default="_meta.source", metavar="FIELD",
                   help="field that records each record's input file when not set yet (default _meta.source)")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.mixing import format_report, mix_jsonl, parse_input_spec

        report = mix_jsonl([parse_input_spec(s) for s in args.inputs], args.output, shuffle=args.shuffle,
                           seed=args.seed, on_error=args.on_error, source_field=args.source_field)
        print(format_report(report))
        return 0

    return cli.run(go, "mix_sft_jsonl")
