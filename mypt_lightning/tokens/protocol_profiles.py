"""Protocol profiles: how an episode becomes tokens, and a conversation a prompt.

``ours`` (the default) is :mod:`mypt_lightning.tokens.protocol` unchanged. The two legacy
profiles reproduce the original MyPT scripts token for token, so a MyPT user can keep
training, chatting with and gating checkpoints in the format they were trained on:

    profile    training data like                    inference prompt like           stops at
    ours       protocol.serialize_episode            protocol.build_prompt           <myPT_eot>
    mypt_chat  scripts/sft/prepare_chat_sft.py       sft_eval_suite / generate.py    </myPT_assistant>, <myPT_eot>
    mypt_tool  scripts/sft/prepare_tool_sft.py       core/agent/controller.py        </myPT_assistant>, <myPT_eot>

mypt_chat: system block = the original's default "You are MyPT." (the record's ``system``
is not used) unless ``system_prompt`` is given or ``no_system_prompt``; user context,
think, cite and assistant_context only with ``rag_tags``; ONE <myPT_eot> per conversation,
after the last assistant block; tool roles do not exist (an error, not silently dropped)::

    <myPT_system>You are MyPT.</myPT_system><myPT_user>Q1</myPT_user><myPT_assistant>A1</myPT_assistant>
    <myPT_user>Q2</myPT_user><myPT_assistant>A2</myPT_assistant><myPT_eot>     (one line in reality)

mypt_tool: the record's ``system``; every block (and the final <myPT_eot>) is followed by
a "\\n" token (weight 0); rag fields always serialized; a string tool result that is not
valid JSON is JSON-quoted (``"no documents"`` -> ``"\\"no documents\\""``)::

    <myPT_system>S</myPT_system>\\n<myPT_user>Q</myPT_user>\\n<myPT_assistant><myPT_toolcall>{...}
    </myPT_toolcall></myPT_assistant>\\n<myPT_toolresult>{...}</myPT_toolresult>\\n<myPT_assistant>A
    </myPT_assistant>\\n<myPT_eot>\\n

Weights are the original's: 1.0 for everything after <myPT_assistant> up to and including
</myPT_assistant>, and for <myPT_eot>; weighted mode gives the tags 1.5/2.0 exactly as
docs/design.md section 1 does. Deliberate differences from the originals (docs/coming_from_mypt.md):
content is plain text (the originals turn a typed "<myPT_eot>" into the control token and
train on it), ``weighted`` is honoured on every path (the original chat script drops it
when not packing), and a replay record is its text with every token trained (the
original chat script's unpacked path turns it into an empty conversation).

>>> get_profile("mypt_chat").name
'mypt_chat'
>>> [p for p in PROFILES]
['ours', 'mypt_chat', 'mypt_tool']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Sequence

from mypt_lightning.tokens import protocol
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError, _Sequence, _tokenizer, toolcall_json
from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE as A_, ASSISTANT_CONTEXT_CLOSE as AC_, ASSISTANT_CONTEXT_OPEN as AC, ASSISTANT_OPEN as A,
    CITE_CLOSE as CI_, CITE_OPEN as CI, ENDOFTEXT_ID, EOT, PAD_ID, SYSTEM_CLOSE as S_, SYSTEM_OPEN as S,
    THINK_CLOSE as TH_, THINK_OPEN as TH, TOOLCALL_CLOSE as TC_, TOOLCALL_OPEN as TC,
    TOOLRESULT_CLOSE as TR_, TOOLRESULT_OPEN as TR, USER_CLOSE as U_, USER_CONTEXT_CLOSE as UC_,
    USER_CONTEXT_OPEN as UC, USER_OPEN as U,
)

# The original's system prompts, verbatim: legacy checkpoints were trained on exactly these
# strings (core/system_prompts.py: CONVERSATION_SYSTEM_PROMPT and DEFAULT_AGENTIC_PROMPT).
LEGACY_CONVERSATION_PROMPT = "You are MyPT."
LEGACY_AGENTIC_PROMPT = (
    "You are MyPT. Answer questions using workspace tools when needed.\n\n"
    "Tools:\n"
    "- workspace.search(query, top_k=5) - find relevant documents\n"
    "- workspace.list_docs() - list all documents  \n"
    "- workspace.get_doc(doc_id or title) - get document text\n"
    "- workspace.summarize(doc_id or text) - summarize content\n\n"
    'Format: <myPT_toolcall>{"name": "workspace.search", "query": "..."}</myPT_toolcall>'
)

NEWLINE_ID = 198  # "\n" in r50k_base: the separator of the tool script

# The original's tokenizer turns every tag string into its control token, so the tag strings
# inside its built-in agentic prompt ("Format: <myPT_toolcall>...</myPT_toolcall>") reached the
# model as control tokens: in the tool SFT data (scripts/sft/generate_sft_tool_episodes.py put
# that prompt in the records) and in every agent controller prompt. It is a fixed string of the
# original, not content a user typed, so a system prompt equal to it keeps those ids here too,
# in training data and prompts alike. Any other text stays plain text (the deliberate fix).
TAGGED_LEGACY_PROMPTS = frozenset({LEGACY_AGENTIC_PROMPT})


@dataclass(frozen=True)
class Profile:
    """One protocol. Options that change the sequence are fields (``with_options``)."""

    name: str
    description: str
    system_prompt: str | None = None  # replaces the record's system (legacy profiles)
    no_system_prompt: bool = False
    rag_tags: bool = True  # mypt_chat: --enable_rag_tags

    # ---- what it is ----------------------------------------------------------------
    @property
    def legacy(self) -> bool:
        return self.name != "ours"

    @property
    def pad_id(self) -> int:
        """Padding of packed blocks (always weight 0): the originals pad with <myPT_eot>."""
        return EOT if self.legacy else PAD_ID

    @property
    def separator_ids(self) -> tuple[int, ...]:
        """Token(s) the profile puts after every block (weight 0)."""
        return (NEWLINE_ID,) if self.name == "mypt_tool" else ()

    def stop_ids(self, stop_at_assistant_close: bool = False) -> frozenset[int]:
        """Generation stop ids: the originals stop at </myPT_assistant> and <myPT_eot>."""
        ids = {EOT, ENDOFTEXT_ID}
        if self.legacy or stop_at_assistant_close:
            ids.add(A_)
        return frozenset(ids)

    def default_system(self, phase: int | str | None = None) -> str | None:
        """The system prompt a model of this profile was trained with: the phase's tier
        (system_prompts.py) for ``ours``, the original's default for the legacy ones."""
        if self.no_system_prompt:
            return None
        if self.system_prompt:
            return self.system_prompt
        if self.name == "mypt_chat":
            return LEGACY_CONVERSATION_PROMPT
        if self.name == "mypt_tool":
            return LEGACY_AGENTIC_PROMPT
        from mypt_lightning.tokens.system_prompts import MINIMAL_SYSTEM_PROMPT, system_prompt_for_phase

        if phase is None:
            return MINIMAL_SYSTEM_PROMPT
        return system_prompt_for_phase(phase)

    def with_options(self, *, system_prompt: str | None = None, no_system_prompt: bool = False,
                     rag_tags: bool | None = None) -> Profile:
        """A copy with prepare_sft's options (--system_prompt, --no_system_prompt, --enable_rag_tags)."""
        if not self.legacy and (system_prompt is not None or no_system_prompt or rag_tags):
            raise UserError("--system_prompt, --no_system_prompt and --enable_rag_tags belong to the legacy "
                            "profiles (--protocol mypt_chat or mypt_tool); protocol 'ours' uses each "
                            "record's own system and fields")
        if system_prompt is not None and no_system_prompt:
            raise UserError("--system_prompt and --no_system_prompt exclude each other")
        return replace(self, system_prompt=system_prompt or None, no_system_prompt=no_system_prompt,
                       rag_tags=self.rag_tags if rag_tags is None else rag_tags)

    def options(self) -> dict:
        """The options as recorded in dataset metadata."""
        return {"name": self.name, "system_prompt": self.system_prompt, "no_system_prompt": self.no_system_prompt,
                "rag_tags": self.rag_tags}

    # ---- training ------------------------------------------------------------------
    def serialize(self, record: dict, weighted: bool = False, tokenizer=None, *,
                  where: str = "") -> tuple[list[int], list[float]]:
        """Validate ``record`` (docs/design.md section 1 schema) and return ``(tokens, weights)``."""
        if not self.legacy:
            return protocol.serialize_episode(record, weighted, tokenizer, where=where)
        protocol.validate_episode(record, where=where)
        seq = self._legacy(record, _tokenizer(tokenizer), weighted, prompt=False, where=where)
        return seq.tokens, seq.weights

    # ---- inference -----------------------------------------------------------------
    def build_prompt(self, record_or_messages: dict | Sequence[dict], system: str | None = None,
                     tokenizer=None, *, where: str = "") -> list[int]:
        """The prompt for the assistant's next block, ending with <myPT_assistant>.

        ``system`` (or the dict's ``system``) is used as given: pass ``default_system()`` for
        the trained one. Legacy prompts are the prefix of their training sequence (mypt_tool:
        what the original agent controller sends, "\\n"-joined); user context is included
        whenever given, past assistant turns get no <myPT_eot> (the originals have one per
        conversation)."""
        if not self.legacy:
            return protocol.build_prompt(record_or_messages, system, tokenizer, where=where)
        if isinstance(record_or_messages, dict):
            record = dict(record_or_messages)
            if system is not None:
                record["system"] = system
        else:
            record = {"system": system, "messages": list(record_or_messages)}
        protocol.validate_prompt(record, where=where)
        return self._legacy(record, _tokenizer(tokenizer), False, prompt=True, where=where).tokens

    def continue_prompt(self, user_message: dict, tokenizer=None, *, where: str = "") -> list[int]:
        """What follows a finished assistant turn for the next user message (no system block)."""
        if not self.legacy:
            return protocol.build_prompt([user_message], tokenizer=tokenizer, where=where)
        record = {"messages": [user_message]}
        protocol.validate_prompt(record, where=where)
        return self._legacy(record, _tokenizer(tokenizer), False, prompt=True, where=where, system_done=True).tokens

    def end_of_answer_ids(self) -> list[int]:
        """Tokens after a final answer's content in a running conversation."""
        return [A_, EOT] if not self.legacy else [A_, *self.separator_ids]

    def after_toolcall_ids(self, result_ids: list[int]) -> list[int]:
        """Tokens after a closed <myPT_toolcall>: the tool result and the next opener."""
        sep = list(self.separator_ids)
        return [A_, *sep, TR, *result_ids, TR_, *sep, A]

    def toolresult_text(self, content: dict | str) -> str:
        if self.name == "mypt_tool":
            return legacy_toolresult_text(content)
        return protocol.toolresult_text(content)

    @property
    def clean_closes(self) -> tuple[tuple[int, ...], ...]:
        """The endings of a cleanly closed answer, as the profile trains them, plus (legacy) a
        stop at ``</myPT_assistant>``, the originals' stop token:

        ours       </myPT_assistant><myPT_eot>
        mypt_chat  </myPT_assistant><myPT_eot>  or  </myPT_assistant> (stopped there)
        mypt_tool  </myPT_assistant>\\n<myPT_eot> or  </myPT_assistant> (stopped there)

        mypt_tool's "\\n" is its separator after every block: a tool model that writes
        ``</myPT_assistant><myPT_eot>`` did not close the way it was trained."""
        if not self.legacy:
            return ((A_, EOT),)
        return ((A_, *self.separator_ids, EOT), (A_,))

    @property
    def clean_close_text(self) -> str:
        """``clean_closes`` in words, for a gate's reasons."""
        from mypt_lightning.tokens.special_tokens import ID_TO_SPECIAL

        def name(t: int) -> str:
            return "\\n" if t == NEWLINE_ID else ID_TO_SPECIAL[t]

        return " or ".join("".join(name(t) for t in close) for close in self.clean_closes)

    def clean_end(self, tokens: Sequence[int]) -> bool:
        """The generation ended with one of ``clean_closes``."""
        tokens = [int(t) for t in tokens]
        return any(len(tokens) >= len(c) and tuple(tokens[-len(c):]) == c for c in self.clean_closes)

    # ---- the legacy serializer -----------------------------------------------------
    def _legacy(self, record: dict, tok, weighted: bool, *, prompt: bool, where: str,
                system_done: bool = False) -> _Sequence:
        seq = _Sequence(tok, weighted)
        if record.get("_replay") is True:
            seq.text(record["text"], trained=True)
            return seq
        tool = self.name == "mypt_tool"
        rag = tool or self.rag_tags or prompt

        def sep() -> None:
            for t in self.separator_ids:
                seq.tag(t, False)

        if not system_done and not self.no_system_prompt:
            if prompt:
                system = record.get("system")
            elif tool:
                system = self.system_prompt or record.get("system")
            else:
                system = self.system_prompt or LEGACY_CONVERSATION_PROMPT
            if system:
                seq.tag(S, False)
                _system_text(seq, system)
                seq.tag(S_, False)
                sep()
        for i, m in enumerate(record["messages"]):
            role = m["role"]
            if not tool and role in ("assistant_toolcall", "toolresult"):
                raise EpisodeError(where, f"messages[{i}].role",
                                   f"{role!r}: the mypt_chat profile (prepare_chat_sft.py) has no tool roles; "
                                   "use --protocol mypt_tool")
            if role == "user":
                seq.tag(U, False)
                if rag and m.get("context"):
                    seq.block(UC, m["context"], UC_, trained=False)
                seq.text(m["content"], False)
                seq.tag(U_, False)
            elif role == "assistant_context":
                if not rag:
                    continue
                seq.block(AC, m["content"], AC_, trained=False)
            elif role == "toolresult":
                seq.block(TR, legacy_toolresult_text(m["content"]), TR_, trained=False)
            else:
                seq.tag(A, True)  # weight 0: the opener is part of the prompt
                if rag and m.get("think"):
                    seq.block(TH, m["think"], TH_, trained=True)
                if role == "assistant_toolcall":
                    seq.block(TC, toolcall_json(m["name"], m["arguments"]), TC_, trained=True)
                else:
                    seq.text(m["content"], True)
                    if rag and m.get("cite"):
                        seq.block(CI, m["cite"], CI_, trained=True)
                seq.tag(A_, True)
            sep()
        if prompt:
            seq.tag(A, True)
        else:
            seq.tag(EOT, True)
            sep()
        return seq


def _system_text(seq: _Sequence, text: str) -> None:
    """The system prompt's ids: plain text, except the original's built-in prompts
    (TAGGED_LEGACY_PROMPTS), whose tag strings are encoded as the tags, as the original did."""
    if text not in TAGGED_LEGACY_PROMPTS:
        seq.text(text, False)
        return
    for piece in protocol._pieces(text, None):  # tag strings as tag ids, the rest as text
        if isinstance(piece, int):
            seq.tag(piece, False)
        elif piece:
            seq.text(piece, False)


def tagged_prompt_ids(tokenizer=None) -> list[list[int]]:
    """The ids of each TAGGED_LEGACY_PROMPTS text (without the system tags), as the legacy
    profiles write them: what validate_sft_dataset accepts inside a MyPT system block."""
    out = []
    for text in sorted(TAGGED_LEGACY_PROMPTS):
        seq = _Sequence(_tokenizer(tokenizer), False)
        _system_text(seq, text)
        out.append(seq.tokens)
    return out


def legacy_toolresult_text(content: dict | str) -> str:
    """prepare_tool_sft.py's tool result text: a string that parses as JSON stays as it is,
    any other string is JSON-quoted; an object is ``json.dumps(ensure_ascii=False)``."""
    if isinstance(content, str):
        try:
            json.loads(content)
            return content
        except (ValueError, RecursionError):
            return json.dumps(content, ensure_ascii=False)
    return json.dumps(content, ensure_ascii=False)


PROFILES: dict[str, Profile] = {
    "ours": Profile("ours", "this project's protocol: <myPT_eot> after every turn, no separators, "
                            "the record's own system prompt"),
    "mypt_chat": Profile("mypt_chat", "MyPT scripts/sft/prepare_chat_sft.py: fixed system prompt, one "
                                      "<myPT_eot> per conversation, rag fields with --enable_rag_tags",
                         rag_tags=False),
    "mypt_tool": Profile("mypt_tool", "MyPT scripts/sft/prepare_tool_sft.py and the agent controller: "
                                      "\\n after every block, JSON-quoted string tool results"),
}
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | Profile | None = None, **options) -> Profile:
    """The profile called ``name`` (None: ``ours``), with prepare_sft's options applied."""
    if isinstance(name, Profile):
        profile = name
    else:
        key = "ours" if name is None else str(name).strip().lower()
        if key not in PROFILES:
            raise UserError(f"unknown protocol {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
        profile = PROFILES[key]
    return profile.with_options(**options) if options else profile


def phase_from_path(path) -> int | None:
    """The phase number in a model path such as ``runs/phase3_chat_sft/export`` (None: none)."""
    import re

    found = re.findall(r"phase([1-6])(?!b)", str(path).lower())
    return int(found[-1]) if found else None


def add_protocol_arguments(parser) -> None:
    """--protocol and --phase of the inference tools (generate.py, chat.py)."""
    parser.add_argument("--protocol", default="ours", choices=PROFILE_NAMES,
                        help="prompt format the model was trained on: ours (default), mypt_chat "
                             "(MyPT prepare_chat_sft.py), mypt_tool (MyPT prepare_tool_sft.py / agent)")
    parser.add_argument("--phase", default=None,
                        help="phase the model was trained in (1-6), for the default system prompt "
                             "(default: taken from the model path, e.g. runs/phase3_chat_sft/...; else phase 1's)")


def trained_system_prompt(profile: Profile, model_path, phase=None) -> str | None:
    """The default system prompt of an inference tool: the profile's, for ``phase`` (or the
    phase in ``model_path``)."""
    return profile.default_system(phase if phase is not None else phase_from_path(model_path))


def profile_from_metadata(meta: dict) -> Profile | None:
    """The profile a dataset was made with: our metadata's ``protocol`` entry, or a MyPT
    original's metadata (tool script: ``dataset_type`` "toolcall_sft"; chat script: its
    ``skip_system_prompt``/``enable_rag_tags`` fields or lineage). None: cannot tell."""
    if not isinstance(meta, dict):
        return None
    recorded = meta.get("protocol")
    if isinstance(recorded, dict) and recorded.get("name") in PROFILES:
        return PROFILES[recorded["name"]]
    if isinstance(recorded, str) and recorded in PROFILES:
        return PROFILES[recorded]
    if meta.get("dataset_type") == "toolcall_sft":
        return PROFILES["mypt_tool"]
    lineage = meta.get("lineage")
    script = ""
    if isinstance(lineage, dict):
        context = lineage.get("creation_context")
        if isinstance(context, dict):
            script = str(context.get("script") or "")
    if script.endswith("prepare_tool_sft.py"):
        return PROFILES["mypt_tool"]
    if script.endswith("prepare_chat_sft.py") or "skip_system_prompt" in meta or "enable_rag_tags" in meta:
        return PROFILES["mypt_chat"]
    if meta.get("created_by") == "mypt_lightning.data_prep.prepare":
        return PROFILES["ours"]
    return None


__all__ = ["add_protocol_arguments", "phase_from_path", "trained_system_prompt", "LEGACY_AGENTIC_PROMPT",
           "TAGGED_LEGACY_PROMPTS", "tagged_prompt_ids", "LEGACY_CONVERSATION_PROMPT", "NEWLINE_ID", "PROFILES", "PROFILE_NAMES",
           "Profile", "get_profile", "legacy_toolresult_text", "profile_from_metadata"]
