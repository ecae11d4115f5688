"""Extract the translatable strings of an episode file, one {"key", "text"} line each.

    python tools/extract_for_translation.py --input en.jsonl --output strings_en.jsonl

Keys are RECORD:PATH (e.g. "12:messages.0.content"). Extracted: system, user content and
context, assistant content and think, assistant_context, replay text; optionally tool-call
string arguments (--tool_arguments) and string tool results (--tool_results). Cite values
and tool names are never translated. Next: translate_deepl.py, then recombine_translations.py.
Exit status: 0 written, 2 bad input or flags.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="extract_for_translation.py")
    p.add_argument("--input", required=True, metavar="JSONL")
    p.add_argument("--output", required=True, metavar="JSONL")
    p.add_argument("--tool_arguments", action="store_true", help="also translate string tool-call arguments")
    p.add_argument("--tool_results", action="store_true", help="also translate string tool results")
    cli.add_on_error(p)
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.translation import extract

        stats = extract(args.input, args.output, args.on_error, tool_arguments=args.tool_arguments,
                        tool_results=args.tool_results)
        print(f"{stats['strings']} strings from {stats['records']} records -> {args.output}"
              + (f" ({stats['skipped']} bad records skipped)" if stats["skipped"] else ""))
        return 0

    return cli.run(go, "extract_for_translation")
