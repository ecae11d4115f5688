"""Our tokenizer as Hugging Face files: ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json`` and ``generation_config.json``, built offline.

The BPE comes from the same tiktoken ``r50k_base`` file our tokenizer reads; nothing is
downloaded. tiktoken stores only ranks (token bytes -> id). A ``tokenizers`` BPE model
needs merges, so each multi-byte token's merge is recovered by replaying tiktoken's own
algorithm on the token's bytes with every rank below the token's allowed: what is left
is the pair that tiktoken joins into the token, and its priority is the token's rank::

    token b" the" (rank 262): b" " b"t" b"h" b"e" -> b" t" b"he" (ranks < 262) -> merge (" t", "he")

With ``ignore_merges`` (a regex piece that is itself a token is taken whole, as tiktoken
does) and the GPT-2 pre-tokenizer regex, ``tokenizer(text).input_ids`` equals
``MyPTTokenizer.encode_text(text)`` for text without tag strings (tests/test_hf_tokenizer.py).

Id space: 0..50255 BPE, 50256 ``<|endoftext|>``, 50257..50275 the 19 tags (added special
tokens with their pinned ids, special_tokens.py). The model's 28 padding rows 50276..50303
have no token; ``generation_config.json`` suppresses them as our generator does.

The one difference HF cannot avoid: a HF tokenizer matches added tokens inside any text,
so a tag string typed inside message content ("<myPT_eot>") becomes the tag id there,
while our serializer (``protocol.py``) and ``tools/chat.py`` keep content plain text.
Pass ``split_special_tokens=True`` to the HF tokenizer for plain text.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE,
    BASE_VOCAB_SIZE,
    ENDOFTEXT_ID,
    EOT,
    ID_TO_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_VOCAB_SIZE,
    VOCAB_SIZE,
)

ENDOFTEXT = "<|endoftext|>"
# The regex of GPT-2 (and r50k_base) that cuts text into pieces before BPE.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Stop ids of an exported model: as tools/generate.py (<myPT_eot>, <|endoftext|>) plus
# </myPT_assistant>, which ends every assistant block; a served tool call must stop there,
# before the model would invent the tool's result.
GENERATION_EOS_IDS = (EOT, ASSISTANT_CLOSE, ENDOFTEXT_ID)
UNUSED_IDS = tuple(range(TOKENIZER_VOCAB_SIZE, VOCAB_SIZE))


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte: printable Latin-1 bytes stand for
    themselves, the other 68 bytes map to U+0100 onwards, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


def _replay_bpe(token: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """tiktoken's merge loop on ``token``: join the adjacent pair of lowest rank (< below)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank, best_at = below, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_rank, best_at = r, i
        if best_at < 0:
            break
        parts[best_at:best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return parts


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab and merges (in priority order) equivalent to tiktoken ``ranks``."""
    to_char = byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_char[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, str, str]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        parts = _replay_bpe(tok, ranks, rank)
        if len(parts) == 2:  # otherwise BPE never builds this token (it is only matched whole)
            merges.append((rank, text(parts[0]), text(parts[1])))
    merges.sort()
    return vocab, [(a, b) for _, a, b in merges]


def build_tokenizer(encoding=None):
    """A ``tokenizers.Tokenizer`` equal to MyPTTokenizer (r50k_base + the 19 tags)."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    if encoding is None:
        from mypt_lightning.tokens.tokenizer import get_tokenizer

        encoding = get_tokenizer()._enc
    ranks = dict(encoding._mergeable_ranks)  # tiktoken keeps no public accessor for them
    if len(ranks) != ENDOFTEXT_ID:
        raise ValueError(f"expected {ENDOFTEXT_ID} BPE ranks, the encoding has {len(ranks)}")
    vocab, merges = vocab_and_merges(ranks)
    vocab[ENDOFTEXT] = ENDOFTEXT_ID
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [ENDOFTEXT] + [ID_TO_SPECIAL[i] for i in range(BASE_VOCAB_SIZE, TOKENIZER_VOCAB_SIZE)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False,
                                       single_word=False) for s in specials])
    for s in specials:  # the ids are the wire protocol: never trust the insertion order
        want = ENDOFTEXT_ID if s == ENDOFTEXT else SPECIAL_TOKENS[s]
        if tok.token_to_id(s) != want:
            raise AssertionError(f"{s} got id {tok.token_to_id(s)}, expected {want}")
    return tok


def _added_tokens_decoder() -> dict[str, dict]:
    out = {}
    for i in range(ENDOFTEXT_ID, TOKENIZER_VOCAB_SIZE):
        content = ENDOFTEXT if i == ENDOFTEXT_ID else ID_TO_SPECIAL[i]
        out[str(i)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": True}
    return out


def tokenizer_config(model_max_length: int, chat_template: str) -> dict:
    """``tokenizer_config.json``: no BOS, EOS ``<myPT_eot>``, pad ``<|endoftext|>``, the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(model_max_length),
        "bos_token": None,
        "eos_token": "<myPT_eot>",
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": _added_tokens_decoder(),
        "chat_template": chat_template,
    }


def special_tokens_map() -> dict:
    tags = [ID_TO_SPECIAL[i] for i in range(BASE_VOCAB_SIZE, TOKENIZER_VOCAB_SIZE)]
    return {"eos_token": "<myPT_eot>", "pad_token": ENDOFTEXT, "additional_special_tokens": tags}


def generation_config() -> dict:
    """``generation_config.json``: greedy by default, stop where tools/generate.py (with
    --stop_at_assistant_close) stops, never emit the embedding padding rows."""
    return {
        "bos_token_id": None,
        "eos_token_id": list(GENERATION_EOS_IDS),
        "pad_token_id": PAD_ID,
        "do_sample": False,
        "suppress_tokens": list(UNUSED_IDS),
        "max_new_tokens": 256,
        "transformers_version": _transformers_version(),
    }


@functools.lru_cache(maxsize=1)
def _default_tokenizer_json() -> str:
    """tokenizer.json of the installed r50k_base file, built once per process (about 5 s)."""
    return build_tokenizer().to_str()


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except ImportError:  # the file is plain JSON; the version is informative only
        return "unknown"


def write_tokenizer_files(directory: str | Path, model_max_length: int, encoding=None) -> list[str]:
    """Write the three tokenizer files and generation_config.json into ``directory``
    (a folder being assembled: callers write it inside an atomic directory)."""
    from mypt_lightning.weights.hf_chat_template import CHAT_TEMPLATE

    directory = Path(directory)
    text = _default_tokenizer_json() if encoding is None else build_tokenizer(encoding).to_str()
    (directory / "tokenizer.json").write_text(text, encoding="utf-8")
    files = {
        "tokenizer_config.json": tokenizer_config(model_max_length, CHAT_TEMPLATE),
        "special_tokens_map.json": special_tokens_map(),
        "generation_config.json": generation_config(),
    }
    for name, data in files.items():
        (directory / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ["tokenizer.json", *files]


__all__ = ["build_tokenizer", "vocab_and_merges", "byte_to_unicode", "tokenizer_config", "special_tokens_map",
           "generation_config", "write_tokenizer_files", "GENERATION_EOS_IDS", "UNUSED_IDS"]
