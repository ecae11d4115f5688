"""Translate an extracted strings file with the DeepL API (resumable).

    DEEPL_API_KEY=... python tools/translate_deepl.py --input strings_en.jsonl \
        --output strings_de.jsonl --target_lang DE [--source_lang EN] [--formality prefer_less]

The key comes from DEEPL_API_KEY (or DEEPL_AUTH_KEY); free keys (ending in ":fx") use
api-free.deepl.com. --api_url (or DEEPL_API_URL) sends the requests elsewhere. Lines are
appended batch by batch; strings already in --output are skipped, so an interrupted run
(or an exhausted quota) resumes where it stopped. 429/5xx answers are retried.
Exit status: 0 done, 2 no key, refused key, quota exceeded or bad input.
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="translate_deepl.py")
    p.add_argument("--input", required=True, metavar="JSONL", help="strings file from extract_for_translation.py")
    p.add_argument("--output", required=True, metavar="JSONL", help="translated strings (appended, resumable)")
    p.add_argument("--target_lang", default="DE", help="DeepL target language code (default DE)")
    p.add_argument("--source_lang", help="source language code (default: detected by DeepL)")
    p.add_argument("--formality", help="DeepL formality (e.g. prefer_less for 'du')")
    p.add_argument("--batch_size", type=int, default=50, help="texts per request (max 50)")
    p.add_argument("--api_url", help="endpoint (default from the key type, or DEEPL_API_URL)")
    args = p.parse_args(argv)

    def go() -> int:
        from mypt_lightning.data_prep.deepl import DeepLClient, translate_file
        from mypt_lightning.data_prep.jsonl import check_input_files

        check_input_files([args.input])
        client = DeepLClient.from_env(args.api_url)
        stats = translate_file(client, args.input, args.output, args.target_lang, args.source_lang,
                               args.formality, args.batch_size)
        print(f"translated {stats['translated']} strings ({stats['characters']} characters), "
              f"{stats['already_done']} already done -> {args.output}")
        return 0

    return cli.run(go, "translate_deepl")
