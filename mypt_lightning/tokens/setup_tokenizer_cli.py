"""Make tiktoken's r50k_base work offline (docs/design.md 9).

    python tools/setup_tokenizer.py                     # pip download the whisper sdist
    python tools/setup_tokenizer.py --from gpt2.tiktoken  # or a local file / sdist / wheel

Idempotent: does nothing when the cached file already has the right sha256.
Exit 0 on success, 2 (with one line on stderr) when the file cannot be provided.
"""

from __future__ import annotations

import argparse

from mypt_lightning.errors import run_cli
from mypt_lightning.tokens.tokenizer_assets import setup_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_path", metavar="PATH",
                        help="gpt2.tiktoken / r50k_base.tiktoken file, or an openai-whisper sdist/wheel")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="tiktoken cache dir (default: $TIKTOKEN_CACHE_DIR, else ~/.cache/mypt_lightning/tiktoken)")
    parser.add_argument("--no-download", action="store_true", help="never run pip download")
    args = parser.parse_args(argv)
    return run_cli(lambda: _setup(args), "setup_tokenizer")


def _setup(args: argparse.Namespace) -> int:
    result = setup_tokenizer(args.from_path, directory=args.cache_dir, allow_download=not args.no_download)
    if result.changed:
        print(f"r50k_base BPE installed at {result.path} (from {result.source})")
    else:
        print(f"r50k_base BPE already present at {result.path}")
    return 0
