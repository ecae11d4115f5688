"""Pre-training replay: plain-text episodes ``{"_replay": true, "text": ...}`` (anti-forgetting).

Sources (``--inputs``, files or folders, searched recursively, read in sorted order):

    *.bin            flat token shards (``--token_dtype uint16|uint32``, default uint16, as
                     nanoGPT-style shards), decoded with the MyPT tokenizer
    *.txt, *.md      plain text
    *.jsonl          one document per line in a "text" field

A sample is a window of at most ``--max_tokens`` tokens at a seeded random position (a
source is chosen in proportion to its size). In token shards the window is split at
``<|endoftext|>`` and the longest piece is kept, so no episode spans two documents;
windows shorter than ``--min_tokens`` are drawn again. ``--mega_tokens N`` instead joins
consecutive samples into ~N-token episodes (phase 1b's general-text mega-episodes).

Languages are detected per window (stopword counts): ``--language any`` keeps all (the
default: real shards decide), ``en``/``de`` filter, ``mixed`` fills a German quota and
fails loudly when the sources cannot provide it. Duplicate windows are skipped.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mypt_lightning.data_prep.jsonl import iter_lines, parse_line
from mypt_lightning.tokens.episode_schema import EpisodeError
from mypt_lightning.generators.common import (
    DEFAULT_DE_SHARE,
    Generated,
    build_arg_parser,
    entry_points,
    language_plan,
    make_rng,
    replay,
)
from mypt_lightning.tokens.special_tokens import ENDOFTEXT_ID
from mypt_lightning.workspace.analysis import detect_language

NAME = "pretrain_replay"
TOKEN_SUFFIXES = (".bin",)
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
MAX_DRAWS_PER_RECORD = 200


@dataclass
class _Source:
    path: Path
    kind: str  # "tokens" | "text" | "jsonl"
    size: int  # tokens for shards, characters for text
    data: object = None


def discover_sources(inputs: list[str | Path], token_dtype: str = "uint16") -> list[_Source]:
    """Every readable source under ``inputs``; unknown file types in an explicit list are errors."""
    dtype = np.dtype(token_dtype)
    sources: list[_Source] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{NAME}: input {path} does not exist")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            suffix = f.suffix.lower()
            if suffix in TOKEN_SUFFIXES:
                if f.stat().st_size % dtype.itemsize:
                    raise ValueError(f"{NAME}: {f} size {f.stat().st_size} is not a multiple of {dtype.itemsize} ({dtype})")
                tokens = np.memmap(f, dtype=dtype, mode="r") if f.stat().st_size else np.zeros(0, dtype)
                sources.append(_Source(f, "tokens", len(tokens), tokens))
            elif suffix in TEXT_SUFFIXES:
                text = f.read_text(encoding="utf-8")
                sources.append(_Source(f, "text", len(text), text))
            elif suffix in JSONL_SUFFIXES:
                docs = []
                for lineno, line in iter_lines(f):
                    try:
                        record = parse_line(line, f"{f}:{lineno}", validate=False)
                    except EpisodeError as exc:
                        raise ValueError(f"{NAME}: {exc}") from None
                    if "text" not in record:
                        raise ValueError(f"{NAME}: {f}:{lineno}: expected a JSON object with 'text'")
                    text = record["text"]
                    if isinstance(text, str) and text.strip():
                        docs.append(text)
                sources.append(_Source(f, "jsonl", sum(len(d) for d in docs), docs))
            elif not path.is_dir():
                raise ValueError(f"{NAME}: {f}: unsupported file type (use .bin token shards, .txt/.md or .jsonl)")
    sources = [s for s in sources if s.size > 0]
    if not sources:
        raise ValueError(f"{NAME}: no non-empty sources under {[str(i) for i in inputs]}")
    return sources


def _drop_partial_start(text: str) -> str:
    """Skip a cut-off first sentence when a boundary comes early enough."""
    cuts = [i for i in (text.find("\n"), text.find(". ")) if 0 <= i < len(text) // 3]
    return text[min(cuts) + 1 :] if cuts else text


def _clean(text: str) -> str:
    return text.strip().strip("\ufffd").strip()


def _sample(src: _Source, rng: random.Random, tok, max_tokens: int, min_tokens: int) -> tuple[str, int, int] | None:
    """(text, offset, n_tokens) of one window, or None when it is too short."""
    if src.kind == "tokens":
        tokens = src.data
        offset = rng.randrange(max(1, len(tokens) - max_tokens + 1))
        window = np.asarray(tokens[offset : offset + max_tokens]).astype(np.int64).tolist()
        pieces, cur = [], []
        for t in window:
            if t == ENDOFTEXT_ID:
                pieces.append(cur)
                cur = []
            else:
                cur.append(t)
        pieces.append(cur)
        index = max(range(len(pieces)), key=lambda i: (len(pieces[i]), -i))
        best = pieces[index]
        if len(best) < min_tokens:
            return None
        text = tok.decode(best)
        if index == 0 and offset > 0 and int(tokens[offset - 1]) != ENDOFTEXT_ID:
            text = _drop_partial_start(text)  # the window began inside a sentence
        return _clean(text), offset, len(best)
    text = src.data if src.kind == "text" else rng.choice(src.data)
    offset = rng.randrange(max(1, len(text) - 1))
    start = text.rfind("\n\n", 0, offset)  # start at a paragraph boundary
    start = 0 if start < 0 else start + 2
    ids = tok.encode_text(text[start : start + max_tokens * 8])[:max_tokens]
    if len(ids) < min_tokens:
        return None
    piece = tok.decode(ids)
    if len(ids) == max_tokens and " " in piece:  # do not end mid-word
        piece = piece[: piece.rfind(" ")]
    return _clean(piece), start, len(ids)


def generate(num_examples: int, seed: int, language: str = "any", *, inputs: list, max_tokens: int = 256,
             min_tokens: int = 32, token_dtype: str = "uint16", mega_tokens: int | None = None,
             de_share: float = DEFAULT_DE_SHARE, tokenizer=None) -> Generated:
    if language not in ("any", "en", "de", "mixed"):
        raise ValueError(f"language must be any, en, de or mixed, got {language!r}")
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if tokenizer is None:
        from mypt_lightning.tokens.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    sources = discover_sources(inputs, token_dtype)
    weights = [s.size for s in sources]
    rng = make_rng(seed, NAME)
    if language == "any":
        plan = [None] * num_examples
    else:
        plan = language_plan(num_examples, language, make_rng(seed, NAME, "languages"), de_share)
    out = Generated.empty(NAME)
    stats = out.stats
    seen: set[str] = set()
    root = Path(inputs[0]) if len(inputs) == 1 and Path(inputs[0]).is_dir() else None
    for wanted in plan:
        parts, total, langs, origin = [], 0, [], None
        target = mega_tokens or 0
        while True:
            for _draw in range(MAX_DRAWS_PER_RECORD):
                src = rng.choices(sources, weights=weights)[0]
                got = _sample(src, rng, tokenizer, max_tokens, min_tokens)
                if got is None:
                    stats.reject("too short")
                    continue
                text, offset, n = got
                lang = detect_language(text)
                if wanted is not None and lang != wanted:
                    stats.reject(f"not {wanted}")
                    continue
                digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
                if digest in seen:
                    stats.reject("duplicate")
                    continue
                seen.add(digest)
                break
            else:
                what = f"{wanted} " if wanted else ""
                raise ValueError(f"{NAME}: no usable {what}window in {MAX_DRAWS_PER_RECORD} draws (rejections so far: "
                                 f"{dict(stats.rejected)}); the sources are too small for --num_examples or lack "
                                 f"that language (try --language any)")
            name = str(src.path.relative_to(root)) if root else src.path.name
            origin = origin or {"source": name, "offset": offset}
            parts.append(text)
            langs.append(lang)
            total += n
            if total >= target * 0.9 or len(parts) >= 64:
                break
        text = "\n\n".join(parts)
        record_lang = max(sorted(set(langs)), key=langs.count)
        record = replay(text, language=record_lang, generator=NAME, tokens=total, documents=len(parts), **origin)
        kind = "mega" if mega_tokens else "window"
        out.add(record, f"{kind}/{record_lang}", f"{kind}/{Path(origin['source']).suffix or 'file'}")
    stats.notes.append(f"{len(sources)} sources, {sum(r['_meta']['tokens'] for r in out.records)} tokens sampled")
    return out


def build_parser():
    parser = build_arg_parser(
        "generate_pretrain_replay.py",
        "Replay episodes sampled from pre-training token shards or text files.",
        default_num=2000,
        language_modes=("any", "en", "de", "mixed"),
        default_language="any",
        epilog=__doc__,
        num_aliases=("--num_episodes",),
    )
    parser.add_argument("--inputs", "--shard_dirs", nargs="+", required=True,
                        help="token shard files/folders (.bin), text files (.txt/.md) or JSONL with 'text'")
    parser.add_argument("--max_tokens", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--min_tokens", type=int, default=32, help="shortest window kept (default 32)")
    parser.add_argument("--token_dtype", choices=("uint16", "uint32"), default="uint16",
                        help="element type of the .bin shards (default uint16)")
    parser.add_argument("--mega_tokens", type=int, default=None,
                        help="join windows into episodes of about this many tokens (phase 1b general text)")
    return parser


main, cli = entry_points(build_parser, generate)


__all__ = ["NAME", "build_parser", "cli", "discover_sources", "generate", "main"]
