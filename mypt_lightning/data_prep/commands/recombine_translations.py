"""Put translated strings back into the episodes they came from.

    python tools/recombine_translations.py --input en.jsonl --translations strings_de.jsonl \
        --output de.jsonl --language de

Every string that extract_for_translation.py extracted must have a translation (same
key); a record missing one is an error (--on-error stop, the default) or skipped and
counted (skip). Output records get "language" and _meta.translated_from /
_meta.translation_of (FILE:RECORD of the original) and are validated before writing.
Use the same --tool_arguments/--tool_results flags as for the extraction.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="recombine_translations.py")
    p.add_argument("--input", required=True, metavar="JSONL", help="the original episodes")
    p.add_argument("--translations", required=True, metavar="JSONL", help="translated strings")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--language", required=True, help="language code of the translation (e.g. de)")
    p.add_argument("--tool_arguments", action="store_true")
    p.add_argument("--tool_results", action="store_true")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.jsonl import check_input_files
        from mypt_lightning.data_prep.translation import recombine

        check_input_files([args.input, args.translations])
        stats = recombine(args.input, args.translations, args.output, args.language, args.on_error,
                          tool_arguments=args.tool_arguments, tool_results=args.tool_results)
        print(f"wrote {stats['written']} translated episodes -> {args.output}"
              + (f" ({stats['skipped']} skipped)" if stats["skipped"] else ""))
        return 0

    return cli.run(go, "recombine_translations")
