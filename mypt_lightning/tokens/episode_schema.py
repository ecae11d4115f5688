"""The JSONL episode schema (docs/design.md section 1) and its validator.

``validate_episode`` accepts exactly the records the serializer in ``protocol.py`` can
turn into tokens without guessing; everything else is an :class:`EpisodeError` whose
message is ``WHERE: FIELD: WHAT`` (for example ``data/p5.jsonl:12: messages[2].arguments:
must be a JSON object (dict), got list``). Import it from ``mypt_lightning.tokens.protocol``.

Turn grammar (a turn ends where the next user message starts)::

    episode := turn+     turn := user (assistant_context | assistant | toolcall toolresult)* assistant
    toolcall := assistant_toolcall          toolresult names the same tool as its call

so every turn ends with an ``assistant`` answer, which <myPT_eot> follows when serialized
(an assistant message in the middle of a turn, e.g. "Let me look that up." before a
toolcall, gets no <myPT_eot>: the model must not learn to stop there). A prompt is the same with its last turn cut where the assistant speaks
next: after a user, an assistant_context or a toolresult message.

Empty optional strings (``system``, ``context``, ``think``, ``cite``) and nulls mean
"absent". Unknown fields are errors (a typo such as "citation" would otherwise drop data
silently), except keys starting with "_" (private metadata such as ``_meta``, ``_id``).
Strings with lone surrogates are errors (tiktoken would silently turn them into U+FFFD).
"""

from __future__ import annotations

import math
import re
from typing import Any

from mypt_lightning.errors import EpisodeError
from mypt_lightning.jsonio import loads_strict

ROLES = ("user", "assistant_context", "assistant", "assistant_toolcall", "toolresult")
# field -> required?  ("role" is implied)
_MESSAGE_FIELDS: dict[str, dict[str, bool]] = {
    "user": {"content": True, "context": False},
    "assistant_context": {"content": True},
    "assistant": {"content": True, "think": False, "cite": False},
    "assistant_toolcall": {"name": True, "arguments": True, "think": False},
    "toolresult": {"name": True, "content": True},
}
_EPISODE_FIELDS = ("system", "messages", "language")
_REPLAY_FIELDS = ("text", "language")
_PROMPT_END_ROLES = ("user", "assistant_context", "toolresult")
_SURROGATE = re.compile("[\ud800-\udfff]")


def validate_episode(record: Any, *, where: str = "") -> None:
    """Raise EpisodeError (naming ``where``, the field and the problem) unless ``record``
    is a complete training episode or a replay record."""
    _validate(record, where, prompt=False)


def parse_episode_line(line: str | bytes, *, where: str = "") -> dict:
    """One JSONL line -> a validated record; bad or hostile JSON (``jsonio.loads_strict``) is
    an EpisodeError like any other."""
    record = loads_strict(line, where)
    validate_episode(record, where=where)
    return record


def validate_prompt(record: Any, *, where: str = "") -> None:
    """Like validate_episode, for a conversation that ends where the assistant speaks next."""
    _validate(record, where, prompt=True)


def is_replay(record: dict) -> bool:
    return isinstance(record, dict) and record.get("_replay") is True


def _validate(record: Any, where: str, *, prompt: bool) -> None:
    def fail(field: str, reason: str):
        raise EpisodeError(where, field, reason)

    if not isinstance(record, dict):
        fail("", f"record must be a JSON object, got {_type(record)}")
    replay = record.get("_replay", False)
    if not isinstance(replay, bool):
        fail("_replay", f"must be true or false, got {replay!r}")
    if replay:
        if prompt:
            fail("_replay", "a replay record is not a conversation; it has no prompt")
        _check_keys(record, _REPLAY_FIELDS + ("_replay",), "", where, "a replay record")
        if "text" not in record:
            fail("text", "missing (a replay record is {\"_replay\": true, \"text\": \"...\"})")
        _check_string(record["text"], "text", where, nonempty=True)
        return

    _check_keys(record, _EPISODE_FIELDS, "", where, "an episode")
    if record.get("system") is not None:
        _check_string(record["system"], "system", where)
    if "language" in record:
        _check_string(record["language"], "language", where)
    if "_meta" in record and not isinstance(record["_meta"], dict):
        fail("_meta", f"must be an object, got {_type(record['_meta'])}")
    if "messages" not in record:
        fail("messages", "missing")
    messages = record["messages"]
    if not isinstance(messages, list):
        fail("messages", f"must be a list, got {_type(messages)}")
    if not messages:
        fail("messages", "is empty")
    for i, m in enumerate(messages):
        _check_message(m, f"messages[{i}]", where)
    _check_turns(messages, where, prompt=prompt)


def _check_message(m: Any, at: str, where: str) -> None:
    if not isinstance(m, dict):
        raise EpisodeError(where, at, f"must be an object with a 'role', got {_type(m)}")
    if "role" not in m:
        raise EpisodeError(where, f"{at}.role", "missing")
    role = m["role"]
    if not isinstance(role, str) or role not in _MESSAGE_FIELDS:
        raise EpisodeError(where, f"{at}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    fields = _MESSAGE_FIELDS[role]
    _check_keys(m, tuple(fields) + ("role",), f"{at}.", where, f"role {role!r}")
    for name, required in fields.items():
        if name not in m or (m[name] is None and not required):
            if required:
                raise EpisodeError(where, f"{at}.{name}", f"missing (required for role {role!r})")
            continue
        value, field = m[name], f"{at}.{name}"
        if name == "arguments":
            if not isinstance(value, dict):
                raise EpisodeError(where, field, f"must be a JSON object (dict), got {_type(value)}")
            if "name" in value:
                raise EpisodeError(where, f"{field}.name",
                                   "collides with the tool name in the serialized call {\"name\": NAME, **arguments}")
            _check_json(value, field, where)
        elif role == "toolresult" and name == "content":
            if isinstance(value, dict):
                _check_json(value, field, where)
            else:
                _check_string(value, field, where, what="a string or a JSON object")
        else:
            _check_string(value, field, where, nonempty=name in ("content", "name"))


def _check_turns(messages: list, where: str, *, prompt: bool) -> None:
    """The turn grammar of the module docstring."""
    def fail(i: int, reason: str):
        raise EpisodeError(where, f"messages[{i}].role", reason)

    roles = [m["role"] for m in messages]
    if roles[0] != "user":
        fail(0, f"an episode starts with a user message, not {roles[0]!r}")
    for i in range(1, len(roles)):
        prev, role = roles[i - 1], roles[i]
        if prev == "assistant_toolcall" and role != "toolresult":
            fail(i, f"{role!r} follows the toolcall at messages[{i - 1}]; its toolresult must come next")
        if role == "toolresult":
            if prev != "assistant_toolcall":
                fail(i, f"toolresult must directly follow an assistant_toolcall, not {prev!r}")
            if messages[i]["name"] != messages[i - 1]["name"]:
                raise EpisodeError(where, f"messages[{i}].name",
                                   f"{messages[i]['name']!r} differs from the call's {messages[i - 1]['name']!r}")
        elif role == "user" and prev != "assistant":
            fail(i, f"user follows {prev!r} at messages[{i - 1}]; the previous turn must end with an "
                    f"assistant answer")
    last = len(roles) - 1
    if prompt and roles[-1] not in _PROMPT_END_ROLES:
        fail(last, f"a prompt ends where the assistant speaks next (after {', '.join(_PROMPT_END_ROLES)}), "
                   f"not after {roles[-1]!r}")
    if not prompt and roles[-1] != "assistant":
        fail(last, f"an episode ends with an assistant answer, not {roles[-1]!r}"
                   + (" (no assistant turn)" if "assistant" not in roles else ""))


def _check_keys(obj: dict, allowed: tuple, prefix: str, where: str, what: str) -> None:
    for key in obj:
        if not isinstance(key, str) or (key not in allowed and not key.startswith("_")):
            raise EpisodeError(where, f"{prefix}{key}",
                               f"unknown field for {what} (allowed: {', '.join(allowed)}, or '_'-prefixed)")


def _check_string(value: Any, field: str, where: str, *, nonempty: bool = False,
                  what: str = "a string") -> None:
    if not isinstance(value, str):
        raise EpisodeError(where, field, f"must be {what}, got {_type(value)}")
    if nonempty and not value:
        raise EpisodeError(where, field, "is empty")
    bad = _SURROGATE.search(value)
    if bad:  # tiktoken would silently turn it into U+FFFD
        raise EpisodeError(where, field, f"invalid Unicode (lone surrogate) at character {bad.start()}")


def _check_json(value: Any, field: str, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise EpisodeError(where, field, f"key {k!r} is not a string")
            _check_string(k, f"{field}.{k}", where)
            _check_json(v, f"{field}.{k}", where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{field}[{i}]", where)
    elif isinstance(value, str):
        _check_string(value, field, where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise EpisodeError(where, field, f"{value} is not valid JSON")
    elif not (value is None or isinstance(value, (bool, int))):
        raise EpisodeError(where, field, f"not JSON-serialisable ({_type(value)})")


def _type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


__all__ = ["ROLES", "EpisodeError", "validate_episode", "validate_prompt", "parse_episode_line", "is_replay"]
