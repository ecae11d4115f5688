"""MyPT tokenizer: GPT-2 BPE (tiktoken ``r50k_base``) plus the 19 pinned MyPT tags.

Id space (docs/design.md section 1)::

    0 ........ 50255   BPE tokens
    50256              <|endoftext|>  (also the pad id)
    50257 .... 50275   <myPT_system> ... <myPT_eot>   (special_tokens.py)
    50276 .... 50303   embedding padding rows: never produced, decode to "<unused_ID>"

Content is ALWAYS encoded as plain text (``encode_ordinary``): a message containing
"<myPT_eot>" or "<|endoftext|>" becomes ordinary BPE pieces, never a special id. Only
the serializer in ``protocol.py`` emits special ids, by id.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Iterable, Sequence

from mypt_lightning.tokens import tokenizer_assets
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.special_tokens import (
    BASE_VOCAB_SIZE,
    ENDOFTEXT_ID,
    ID_TO_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_VOCAB_SIZE,
    VOCAB_SIZE,
)

BASE_ENCODING = "r50k_base"
TOKENIZER_NAME = "r50k_base+mypt19"
ENDOFTEXT = "<|endoftext|>"
STATE_FORMAT_VERSION = 1


class TokenizerUnavailableError(UserError, RuntimeError):
    """The r50k_base BPE file is not installed; the message names the command to run."""


def _load_base_encoding():
    import tiktoken

    directory = tokenizer_assets.ensure_tiktoken_env()
    # Check first: tiktoken would otherwise try the network (and hang or fail obscurely).
    if not tokenizer_assets.is_installed(directory):
        raise TokenizerUnavailableError(tokenizer_assets.missing_message(directory))
    enc = tiktoken.get_encoding(BASE_ENCODING)
    if enc.n_vocab != BASE_VOCAB_SIZE or enc.eot_token != ENDOFTEXT_ID:
        raise TokenizerUnavailableError(
            f"tiktoken {BASE_ENCODING} has n_vocab={enc.n_vocab}, eot={enc.eot_token}; "
            f"expected {BASE_VOCAB_SIZE}, {ENDOFTEXT_ID}"
        )
    return enc


class MyPTTokenizer:
    """r50k_base + the MyPT tags. Cheap to share: use :func:`get_tokenizer`."""

    name = TOKENIZER_NAME
    base_encoding_name = BASE_ENCODING
    vocab_size = VOCAB_SIZE  # embedding rows (50304)
    tokenizer_vocab_size = TOKENIZER_VOCAB_SIZE  # distinct ids in use (50276)
    base_vocab_size = BASE_VOCAB_SIZE  # 50257, <|endoftext|> included
    eot_id = SPECIAL_TOKENS["<myPT_eot>"]
    endoftext_id = ENDOFTEXT_ID
    pad_id = PAD_ID

    def __init__(self, encoding=None):
        self._enc = encoding if encoding is not None else _load_base_encoding()

    # ---- encoding -------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Plain-text ids of ``text``; tag strings and <|endoftext|> stay ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_text expects str, got {type(text).__name__}")
        return self._enc.encode_ordinary(text)

    def encode_batch_text(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode_batch_text: texts[{i}] is {type(t).__name__}, not str")
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    # ---- decoding -------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of ``ids``; tags and <|endoftext|> as their strings (or dropped with skip_special).

        Ids 50276..50303 (embedding padding rows, never produced by the tokenizer) decode
        to ``<unused_ID>`` so a model sampling them is visible; dropped with skip_special.
        BPE runs are decoded as one byte string so multi-byte characters split across
        tokens come out whole; invalid UTF-8 becomes U+FFFD.
        """
        ids = _as_int_list(ids)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if 0 <= i < ENDOFTEXT_ID:
                run.append(i)
                continue
            if run:
                parts.append(self._enc.decode(run, errors="replace"))
                run = []
            if not skip_special:
                parts.append(self.id_to_token(i))
            elif not (0 <= i < VOCAB_SIZE):
                raise ValueError(f"token id {i} outside the vocab [0, {VOCAB_SIZE})")
        if run:
            parts.append(self._enc.decode(run, errors="replace"))
        return "".join(parts)

    # ---- id <-> token ----------------------------------------------------------------
    def token_to_id(self, tag: str) -> int:
        """Id of a special token string (our tags or <|endoftext|>)."""
        if tag == ENDOFTEXT:
            return ENDOFTEXT_ID
        try:
            return SPECIAL_TOKENS[tag]
        except KeyError:
            raise KeyError(f"{tag!r} is not a special token; known: {ENDOFTEXT}, "
                           f"{', '.join(SPECIAL_TOKENS)}") from None

    def id_to_token(self, token_id: int) -> str:
        """String of one id: the tag, <|endoftext|>, <unused_ID>, or the BPE piece (U+FFFD for partial bytes)."""
        token_id = int(token_id)
        if token_id in ID_TO_SPECIAL:
            return ID_TO_SPECIAL[token_id]
        if token_id == ENDOFTEXT_ID:
            return ENDOFTEXT
        if TOKENIZER_VOCAB_SIZE <= token_id < VOCAB_SIZE:
            return f"<unused_{token_id}>"
        if 0 <= token_id < ENDOFTEXT_ID:
            return self._enc.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")
        raise ValueError(f"token id {token_id} outside the vocab [0, {VOCAB_SIZE})")

    @staticmethod
    def is_special(token_id: int) -> bool:
        """True for <|endoftext|> and the 19 MyPT tags (ids 50256..50275)."""
        return ENDOFTEXT_ID <= int(token_id) < TOKENIZER_VOCAB_SIZE

    # ---- persistence -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a dataset's tokenizer_state.json records, to refuse mismatched tokenizers."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "name": TOKENIZER_NAME,
            "base_encoding": BASE_ENCODING,
            "base_bpe_sha256": tokenizer_assets.R50K_SHA256,
            "base_vocab_size": BASE_VOCAB_SIZE,
            "tokenizer_vocab_size": TOKENIZER_VOCAB_SIZE,
            "vocab_size": VOCAB_SIZE,
            "endoftext_id": ENDOFTEXT_ID,
            "pad_id": PAD_ID,
            "special_tokens": dict(SPECIAL_TOKENS),
            "special_tokens_sha1": special_tokens_fingerprint(),
        }

    def check_state_dict(self, state: dict, *, where: str = "tokenizer_state.json") -> None:
        """Raise ValueError naming the first field where ``state`` disagrees with this tokenizer.

        Also accepts the legacy MyPT layout (``token_kind``/``model_vocab_size``/
        ``special_token_encoder``) when it describes the same GPT-2 BPE + pinned tags.
        """
        if "token_kind" in state:
            return _check_legacy_state(state, where)
        mine = self.state_dict()
        for key in ("base_encoding", "base_vocab_size", "vocab_size", "endoftext_id", "special_tokens"):
            if key not in state:
                raise ValueError(f"{where}: missing field {key!r}")
            if state[key] != mine[key]:
                raise ValueError(f"{where}: {key} is {state[key]!r}, this tokenizer has {mine[key]!r}")

    def __repr__(self) -> str:
        return f"MyPTTokenizer(name={self.name!r}, vocab_size={self.vocab_size})"


def _check_legacy_state(state: dict, where: str) -> None:
    """The original MyPT pipeline's tokenizer_state.json: gpt2 BPE, 50304 rows, our tag ids."""
    if state.get("token_kind") != "gpt2":
        raise ValueError(f"{where}: token_kind is {state.get('token_kind')!r}, expected 'gpt2'")
    if state.get("model_vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
        raise ValueError(f"{where}: model_vocab_size is {state['model_vocab_size']!r}, expected {VOCAB_SIZE}")
    encoder = state.get("special_token_encoder")
    if encoder is not None and {k: int(v) for k, v in encoder.items()} != SPECIAL_TOKENS:
        differing = sorted(k for k in set(encoder) | set(SPECIAL_TOKENS) if encoder.get(k) != SPECIAL_TOKENS.get(k))
        raise ValueError(f"{where}: special_token_encoder differs from the pinned ids at {differing[:5]}")


def special_tokens_fingerprint() -> str:
    """sha1 of the tag table, ordered by id: changes iff a tag or id changes."""
    table = ",".join(f"{i}:{t}" for t, i in sorted(SPECIAL_TOKENS.items(), key=lambda kv: kv[1]))
    return hashlib.sha1(table.encode()).hexdigest()


def _as_int_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):  # numpy array / torch tensor
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> MyPTTokenizer:
    """The process-wide tokenizer. Raises TokenizerUnavailableError when the BPE file is missing."""
    return MyPTTokenizer()


__all__ = [
    "MyPTTokenizer", "TokenizerUnavailableError", "get_tokenizer", "special_tokens_fingerprint",
    "TOKENIZER_NAME", "BASE_ENCODING", "ENDOFTEXT",
]
