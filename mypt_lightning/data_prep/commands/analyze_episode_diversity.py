"""Measure the diversity of JSONL episodes: distinct n-grams, template signatures, languages.

    python tools/analyze_episode_diversity.py --input episodes.jsonl [--json report.json] [--top 10]

Reports distinct-1/2/3 (distinct word n-grams / all n-grams) for user and assistant text,
the share of repeated user messages, template signatures (numbers, quotes and names
replaced, first 8 words) with the most common ones, the language mix and the role
structures. Bad records: FILE:LINE: FIELD: REASON; --on-error stop (default) or skip.
Exit status: 0 done, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="analyze_episode_diversity.py")
    p.add_argument("--input", action="append", required=True, metavar="JSONL", help="input file (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--top", type=int, default=10, help="how many signatures/structures to list (default 10)")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:

        from mypt_lightning.data_prep.diversity import analyze, format_report
        from data_modules.atomic_write import write_json_atomic
        from mypt_lightning.data_prep.jsonl import ErrorLog, iter_records

        errors = ErrorLog(args.on_error)
        report = analyze(iter_records(args.input, errors), top=args.top)
        print(format_report(report))
        if errors.count:
            print(errors.summary())
        if args.json:
            write_json_atomic(args.json, report, ensure_ascii=False)
        return 0

    return cli.run(go, "analyze_episode_diversity")
