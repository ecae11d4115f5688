"""The 19 MyPT special tokens, their pinned ids, and the loss weight of each.

The ids are part of the wire protocol: existing MyPT checkpoints were trained on
them, so they never change. The base tokenizer is GPT-2 BPE (tiktoken ``r50k_base``,
ids 0..50256); the tags follow directly after it.

>>> SPECIAL_TOKENS["<myPT_eot>"]
50275
>>> ID_TO_SPECIAL[50261]
'<myPT_assistant>'
>>> VOCAB_SIZE
50304
"""

from __future__ import annotations

BASE_VOCAB_SIZE = 50257  # r50k_base, <|endoftext|> included
ENDOFTEXT_ID = 50256
PAD_ID = ENDOFTEXT_ID  # padding reuses <|endoftext|>; padded positions always carry weight 0

# Order defines the ids: 50257 + index. Never reorder, never insert.
_TAG_NAMES = (
    "system",
    "user",
    "assistant",
    "user_context",
    "assistant_context",
    "toolcall",
    "toolresult",
    "think",
    "cite",
)

SPECIAL_TOKENS: dict[str, int] = {}
for _i, _name in enumerate(_TAG_NAMES):
    SPECIAL_TOKENS[f"<myPT_{_name}>"] = BASE_VOCAB_SIZE + 2 * _i
    SPECIAL_TOKENS[f"</myPT_{_name}>"] = BASE_VOCAB_SIZE + 2 * _i + 1
SPECIAL_TOKENS["<myPT_eot>"] = BASE_VOCAB_SIZE + 2 * len(_TAG_NAMES)  # 50275

ID_TO_SPECIAL: dict[int, str] = {v: k for k, v in SPECIAL_TOKENS.items()}
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)  # 19
TOKENIZER_VOCAB_SIZE = BASE_VOCAB_SIZE + NUM_SPECIAL_TOKENS  # 50276 distinct ids
VOCAB_SIZE = (TOKENIZER_VOCAB_SIZE + 63) // 64 * 64  # 50304 embedding rows


def tag_id(name: str) -> int:
    """Id of a tag given with or without brackets: ``tag_id("eot") == tag_id("<myPT_eot>")``."""
    key = name if name.startswith("<") else f"<myPT_{name}>"
    try:
        return SPECIAL_TOKENS[key]
    except KeyError:
        raise KeyError(f"unknown special token {name!r}; known: {sorted(SPECIAL_TOKENS)}") from None


# Named constants for the ids code refers to most.
SYSTEM_OPEN, SYSTEM_CLOSE = tag_id("system"), tag_id("</myPT_system>")
USER_OPEN, USER_CLOSE = tag_id("user"), tag_id("</myPT_user>")
ASSISTANT_OPEN, ASSISTANT_CLOSE = tag_id("assistant"), tag_id("</myPT_assistant>")
USER_CONTEXT_OPEN, USER_CONTEXT_CLOSE = tag_id("user_context"), tag_id("</myPT_user_context>")
ASSISTANT_CONTEXT_OPEN, ASSISTANT_CONTEXT_CLOSE = (
    tag_id("assistant_context"),
    tag_id("</myPT_assistant_context>"),
)
TOOLCALL_OPEN, TOOLCALL_CLOSE = tag_id("toolcall"), tag_id("</myPT_toolcall>")
TOOLRESULT_OPEN, TOOLRESULT_CLOSE = tag_id("toolresult"), tag_id("</myPT_toolresult>")
THINK_OPEN, THINK_CLOSE = tag_id("think"), tag_id("</myPT_think>")
CITE_OPEN, CITE_CLOSE = tag_id("cite"), tag_id("</myPT_cite>")
EOT = tag_id("eot")

# Loss weight of each special token when it appears inside an assistant turn
# (weighted mode; binary mode uses 1.0 wherever this is > 0). docs/design.md section 1.
# Tags that the system injects (system, user, contexts, toolresult, and the
# <myPT_assistant> opener that is part of the inference prompt) weigh 0.
SPECIAL_TOKEN_WEIGHTS: dict[int, float] = {
    ASSISTANT_OPEN: 0.0,
    ASSISTANT_CLOSE: 2.0,
    EOT: 2.0,
    THINK_OPEN: 1.5,
    THINK_CLOSE: 1.5,
    CITE_OPEN: 1.5,
    CITE_CLOSE: 1.5,
    TOOLCALL_OPEN: 2.0,
    TOOLCALL_CLOSE: 2.0,
}
CONTENT_WEIGHT = 1.0  # assistant text tokens and replay text

__all__ = [name for name in dir() if not name.startswith("_")]
