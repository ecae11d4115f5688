"""Tokens and the protocol: the 19 special tags and their pinned ids, the GPT-2 BPE tokenizer
(offline r50k_base), the JSONL episode schema, the serializer that turns an episode into token
ids and loss weights, and the system prompts of each phase.

Imports nothing else of the package, so the binary-format code (``data_modules``) and every
tool can depend on it cheaply.
"""
