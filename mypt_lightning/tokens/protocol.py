"""The MyPT wire protocol, written once: episode schema, training serialization, prompts.

Training data (``serialize_episode``) and inference prompts (``build_prompt``) both come
from ``_serialize`` below, so a prompt is always a token-exact prefix of the training
sequence of the same conversation (docs/design.md section 1 and 4).

Serialization: tags are emitted BY ID, every content span is encoded separately as plain
text (``encode_ordinary``), and nothing is inserted between them: no whitespace, no
stripping of content. A span's BPE therefore never merges across a tag, and content that
contains "<myPT_eot>" or "<|endoftext|>" stays ordinary text. Example (weighted mode; the
weight of a token is the weight of PREDICTING it; ``{...}`` is one content span)::

    record = {"system": "S", "messages": [
        {"role": "user", "content": "Q", "context": "C"},
        {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "ML"},
         "think": "T"},
        {"role": "toolresult", "name": "workspace.search", "content": {"documents": []}},
        {"role": "assistant", "content": "A", "cite": "R"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"}]}

    <myPT_system> {S} </myPT_system>                                     0 0 0
    <myPT_user> <myPT_user_context> {C} </myPT_user_context> {Q} </myPT_user>  0 ... 0
    <myPT_assistant> <myPT_think> {T} </myPT_think>                      0 1.5 1.0 1.5
        <myPT_toolcall> {{"name": "workspace.search", "query": "ML"}} </myPT_toolcall>   2 1.0 2
    </myPT_assistant>                                                    2
    <myPT_toolresult> {{"documents": []}} </myPT_toolresult>              0 0 0
    <myPT_assistant> {A} <myPT_cite> {R} </myPT_cite> </myPT_assistant>   0 1.0 1.5 1.0 1.5 2
    <myPT_eot>                                                           2   (end of turn 1)
    <myPT_user> {Q2} </myPT_user> <myPT_assistant> {A2} </myPT_assistant> <myPT_eot>
                                                                         0 0 0 0 1.0 2 2
    (line breaks and spaces are for reading only; binary mode: 1.0 wherever weighted > 0)

``build_prompt`` of the first three messages gives everything up to and including the
second ``<myPT_assistant>``: the opener is part of the prompt at inference (weight 0).

The episode schema and turn grammar (every turn ends with one final assistant answer,
which is followed by ``<myPT_eot>``) live in ``episode_schema.py`` and are re-exported here.

Replay records ``{"_replay": true, "text": "..."}`` serialize to ``encode_ordinary(text)``
with weight 1.0 on every token and NO trailing ``<|endoftext|>``: the legacy pipeline
("full loss", tokens = the text) did not add one, replay texts are often windows cut from
longer documents, and unpacked datasets pad with ``<|endoftext|>`` at weight 0 anyway.

Empty optional strings (``system``, ``context``, ``think``, ``cite``) mean "absent" (no
block). Content is never stripped or normalised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from mypt_lightning.tokens.episode_schema import (
    ROLES,
    EpisodeError,
    is_replay,
    parse_episode_line,
    validate_episode,
    validate_prompt,
)
from mypt_lightning.jsonio import loads_strict
from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE,
    ASSISTANT_CONTEXT_CLOSE,
    ASSISTANT_CONTEXT_OPEN,
    ASSISTANT_OPEN,
    CITE_CLOSE,
    CITE_OPEN,
    CONTENT_WEIGHT,
    ENDOFTEXT_ID,
    EOT,
    ID_TO_SPECIAL,
    SPECIAL_TOKEN_WEIGHTS,
    SYSTEM_CLOSE,
    SYSTEM_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    TOOLCALL_CLOSE,
    TOOLCALL_OPEN,
    TOOLRESULT_CLOSE,
    TOOLRESULT_OPEN,
    USER_CLOSE,
    USER_CONTEXT_CLOSE,
    USER_CONTEXT_OPEN,
    USER_OPEN,
)

# ============================================================================ serialization


class _Sequence:
    """Tokens and their weights, built span by span."""

    def __init__(self, tokenizer, weighted: bool):
        self.tok, self.weighted = tokenizer, weighted
        self.tokens: list[int] = []
        self.weights: list[float] = []

    def _weight(self, w: float) -> float:
        return w if self.weighted else (1.0 if w > 0 else 0.0)

    def tag(self, token_id: int, trained: bool) -> None:
        self.tokens.append(token_id)
        self.weights.append(self._weight(SPECIAL_TOKEN_WEIGHTS.get(token_id, 0.0) if trained else 0.0))

    def text(self, s: str, trained: bool) -> None:
        ids = self.tok.encode_text(s)
        self.tokens.extend(ids)
        self.weights.extend([self._weight(CONTENT_WEIGHT if trained else 0.0)] * len(ids))

    def block(self, open_id: int, s: str, close_id: int, trained: bool) -> None:
        self.tag(open_id, trained)
        self.text(s, trained)
        self.tag(close_id, trained)


def toolcall_json(name: str, arguments: dict) -> str:
    """The text inside <myPT_toolcall>: ``json.dumps({"name": NAME, **arguments}, ensure_ascii=False)``."""
    return json.dumps({"name": name, **arguments}, ensure_ascii=False)


def toolresult_text(content: dict | str) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _serialize(record: dict, tokenizer, weighted: bool, *, prompt: bool) -> _Sequence:
    seq = _Sequence(tokenizer, weighted)
    if record.get("_replay") is True:
        seq.text(record["text"], trained=True)
        return seq
    if record.get("system"):
        seq.block(SYSTEM_OPEN, record["system"], SYSTEM_CLOSE, trained=False)
    messages = record["messages"]
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "user":
            seq.tag(USER_OPEN, False)
            if m.get("context"):
                seq.block(USER_CONTEXT_OPEN, m["context"], USER_CONTEXT_CLOSE, trained=False)
            seq.text(m["content"], False)
            seq.tag(USER_CLOSE, False)
        elif role == "assistant_context":
            seq.block(ASSISTANT_CONTEXT_OPEN, m["content"], ASSISTANT_CONTEXT_CLOSE, trained=False)
        elif role == "toolresult":
            seq.block(TOOLRESULT_OPEN, toolresult_text(m["content"]), TOOLRESULT_CLOSE, trained=False)
        else:  # assistant / assistant_toolcall: one assistant block
            seq.tag(ASSISTANT_OPEN, True)  # weight 0 by SPECIAL_TOKEN_WEIGHTS: it is in the prompt
            if m.get("think"):
                seq.block(THINK_OPEN, m["think"], THINK_CLOSE, trained=True)
            if role == "assistant_toolcall":
                seq.block(TOOLCALL_OPEN, toolcall_json(m["name"], m["arguments"]), TOOLCALL_CLOSE, trained=True)
                seq.tag(ASSISTANT_CLOSE, True)
            else:
                seq.text(m["content"], True)
                if m.get("cite"):
                    seq.block(CITE_OPEN, m["cite"], CITE_CLOSE, trained=True)
                seq.tag(ASSISTANT_CLOSE, True)
                turn_ends = i + 1 == len(messages) or messages[i + 1]["role"] == "user"
                if turn_ends:  # <myPT_eot> closes the last assistant block of every turn
                    seq.tag(EOT, True)
    if prompt:
        seq.tag(ASSISTANT_OPEN, True)
    return seq


def _tokenizer(tokenizer):
    if tokenizer is not None:
        return tokenizer
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    return get_tokenizer()


def serialize_episode(record: dict, weighted: bool = False, tokenizer=None, *,
                      where: str = "") -> tuple[list[int], list[float]]:
    """Validate ``record`` and return ``(tokens, weights)`` of equal length.

    ``weights[i]`` is the loss weight of predicting ``tokens[i]``: docs/design.md section 1's
    table when ``weighted``, else 1.0 wherever that table is > 0 and 0.0 elsewhere.
    """
    validate_episode(record, where=where)
    seq = _serialize(record, _tokenizer(tokenizer), weighted, prompt=False)
    return seq.tokens, seq.weights


def build_prompt(record_or_messages: dict | Sequence[dict], system: str | None = None,
                 tokenizer=None, *, where: str = "") -> list[int]:
    """Tokens of the conversation so far followed by ``<myPT_assistant>``.

    Accepts an episode-shaped dict (its ``system`` is used unless ``system`` is given) or
    a list of messages. The conversation must end where the assistant speaks next (after a
    user, assistant_context or toolresult message). The result equals the prefix of
    ``serialize_episode`` of any episode that continues this conversation.
    """
    if isinstance(record_or_messages, dict):
        record = dict(record_or_messages)
        if system is not None:
            record["system"] = system
    else:
        record = {"system": system, "messages": list(record_or_messages)}
    validate_prompt(record, where=where)
    return _serialize(record, _tokenizer(tokenizer), False, prompt=True).tokens


def render(tokens: Iterable[int], weights: Sequence[float] | None = None, *, tokenizer=None,
           newlines: bool = False) -> str:
    """Human-readable text of ``tokens``: tags as their strings.

    ``newlines`` puts a line break after closing tags and <myPT_eot>; ``weights`` marks
    every change of weight as ``[w=1.5]`` (for inspecting masks). Display only: content
    that itself contains tag strings is indistinguishable from real tags here.
    """
    tok = _tokenizer(tokenizer)
    tokens = [int(t) for t in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
    if weights is not None:
        weights = list(weights.tolist() if hasattr(weights, "tolist") else weights)
        if len(weights) != len(tokens):
            raise ValueError(f"render: {len(tokens)} tokens but {len(weights)} weights")
    out: list[str] = []
    run: list[int] = []
    current_w = None
    for i, t in enumerate(tokens):
        w = None if weights is None else float(weights[i])
        if w is not None and w != current_w:
            out.append(tok.decode(run))
            run = []
            out.append(f"[w={w:g}]")
            current_w = w
        if tok.is_special(t) or t >= ENDOFTEXT_ID:
            out.append(tok.decode(run) + tok.id_to_token(t))
            run = []
            name = ID_TO_SPECIAL.get(t, "")
            if newlines and (name.startswith("</") or t == EOT):
                out.append("\n")
        else:
            run.append(t)
    out.append(tok.decode(run))
    return "".join(out)


# ============================================================================ model output


@dataclass
class AssistantOutput:
    """What a generated assistant block says. ``to_message()`` gives the schema's message."""

    answer: str
    think: str | None = None
    cite: str | None = None
    toolcall: dict | None = None  # {"name": str, "arguments": dict}
    toolcall_error: str | None = None  # set when <myPT_toolcall> held no valid call
    closed: bool = False  # saw </myPT_assistant>
    eot: bool = False  # saw <myPT_eot>

    def to_message(self) -> dict:
        if self.toolcall is not None:
            msg = {"role": "assistant_toolcall", **self.toolcall}
        else:
            msg = {"role": "assistant", "content": self.answer}
            if self.cite:
                msg["cite"] = self.cite
        if self.think:
            msg["think"] = self.think
        return msg


_TAG_STRINGS = {v: k for k, v in ID_TO_SPECIAL.items()} | {"<|endoftext|>": ENDOFTEXT_ID}
_TAG_RE = re.compile("|".join(re.escape(t) for t in sorted(_TAG_STRINGS, key=len, reverse=True)))


def _pieces(text_or_ids, tokenizer) -> list[int | str]:
    """Tags as ids, content as strings. From ids, only real tag ids count as tags."""
    if isinstance(text_or_ids, str):
        pieces: list[int | str] = []
        pos = 0
        for m in _TAG_RE.finditer(text_or_ids):
            pieces += [text_or_ids[pos:m.start()], _TAG_STRINGS[m.group()]]
            pos = m.end()
        return pieces + [text_or_ids[pos:]]
    tok = _tokenizer(tokenizer)
    ids = [int(t) for t in (text_or_ids.tolist() if hasattr(text_or_ids, "tolist") else text_or_ids)]
    pieces, run = [], []
    for t in ids:
        if tok.is_special(t):
            pieces += [tok.decode(run), t]
            run = []
        else:
            run.append(t)
    return pieces + [tok.decode(run)]


def parse_assistant_output(text_or_ids: str | Iterable[int], tokenizer=None) -> AssistantOutput:
    """Parse generated text/ids that follow the prompt's ``<myPT_assistant>`` (a leading
    opener is skipped). Stops at ``</myPT_assistant>``, ``<myPT_eot>`` or ``<|endoftext|>``.
    Unclosed think/cite/toolcall spans run to the end. Never raises on malformed output: a
    toolcall that is not a strict JSON object with a string "name" sets ``toolcall_error``."""
    out = AssistantOutput(answer="")
    answer: list[str] = []
    spans = {THINK_OPEN: (THINK_CLOSE, "think"), CITE_OPEN: (CITE_CLOSE, "cite"),
             TOOLCALL_OPEN: (TOOLCALL_CLOSE, "toolcall")}
    inside: tuple[int, str] | None = None
    buf: list[str] = []
    found: dict[str, str] = {}
    pieces = _pieces(text_or_ids, tokenizer)
    if pieces and pieces[0] == "" and len(pieces) > 1 and pieces[1] == ASSISTANT_OPEN:
        pieces = pieces[2:]
    for k, p in enumerate(pieces):
        if isinstance(p, str):
            (buf if inside else answer).append(p)
        elif p in (ASSISTANT_CLOSE, EOT, ENDOFTEXT_ID):
            out.closed, out.eot = p == ASSISTANT_CLOSE, p == EOT
            if out.closed:  # </myPT_assistant> then <myPT_eot> with no text between them
                out.eot = pieces[k + 1:k + 3] == ["", EOT]
            break
        elif inside and p == inside[0]:
            found.setdefault(inside[1], "".join(buf))
            inside, buf = None, []
        elif not inside and p in spans:
            inside = spans[p]
        # any other tag is out of place: ignored, the text around it is kept
    if inside:
        found.setdefault(inside[1], "".join(buf))
    out.answer = "".join(answer)
    out.think, out.cite = found.get("think"), found.get("cite")
    if "toolcall" in found:
        # the model's text is untrusted: deep nesting, huge numbers, duplicate keys, NaN are errors
        try:
            call = loads_strict(found["toolcall"])
        except EpisodeError as exc:
            out.toolcall_error = f"invalid toolcall JSON: {exc.reason.removeprefix('invalid JSON: ')}"
            return out
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            out.toolcall_error = 'invalid toolcall JSON: expected a JSON object with a string "name"'
        else:
            name = call.pop("name")
            out.toolcall = {"name": name, "arguments": call}
    return out


__all__ = [
    "ROLES", "EpisodeError", "validate_episode", "validate_prompt", "parse_episode_line", "is_replay",
    "serialize_episode", "build_prompt", "render", "toolcall_json", "toolresult_text",
    "AssistantOutput", "parse_assistant_output",
]
