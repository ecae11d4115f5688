"""One function per Hugging Face dataset layout: a row (or, for OASST, a table) -> turns.

A *turn list* is the neutral middle step every layout produces and ``hf_convert`` turns
into an episode (docs/design.md section 1)::

    ("system", text) ("user", text) ("assistant", text)
    ("call", {"name": str, "arguments": dict, "preamble": str}) ("result", text)

Layouts (real column names; tests feed small files written in each schema):

    oasst     OpenAssistant/oasst2 message table: message_id, parent_id, message_tree_id,
              role (prompter|assistant), text, lang, rank, deleted, review_result
    alpaca    instruction, input, output (alpaca-gpt4_de; *_de columns as in OpenSchnabeltier)
    sharegpt  conversations|conversation: [{from|role: human|gpt|system|prompter|..., value|text}]
              (avemio German-RAG SFT, OASST-DE; function_call/observation turns too)
    messages  messages: [{role: system|user|assistant, content}] (Dolci-Instruct, ultra-chat)
    dolci_tools  messages whose assistant turns carry function_calls (OLMo 3 style, the calls
              as python-call lines, JSON or <invoke> XML inside <function_calls>) and whose
              tool outputs have role environment; tool specs in the system's "functions"
    glaive    system + chat text ("USER: ... ASSISTANT: <functioncall> {...} FUNCTION RESPONSE: ...")
              as in glaive-function-calling and German function-calling sets
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Iterable, Iterator

from mypt_lightning.tokens.episode_schema import EpisodeError
from mypt_lightning.jsonio import loads_strict

Turn = tuple[str, Any]


class Skip(Exception):
    """A row that cannot become an episode; the message is the counted reason."""


_ROLE_KIND = {
    "system": "system",
    "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
    "function_call": "call", "tool_call": "call",
    "tool": "result", "function": "result", "environment": "result", "observation": "result",
    "function_response": "result", "ipython": "result",
}



_NOT_JSON = object()


def _json_or_not(text: str) -> Any:
    """The JSON value of ``text``, or ``_NOT_JSON``: HF fields are untrusted, so they go
    through the project's strict parser (no crash on deep nesting or huge integers)."""
    try:
        return loads_strict(text)
    except EpisodeError:
        return _NOT_JSON

def _text(message: dict) -> Any:
    for key in ("content", "value", "text"):
        if key in message and message[key] is not None:
            return message[key]
    return ""


def _role(message: dict) -> str:
    role = message.get("role", message.get("from"))
    if not isinstance(role, str) or role.lower() not in _ROLE_KIND:
        raise Skip(f"unknown role {role!r}")
    return _ROLE_KIND[role.lower()]


# ---------------------------------------------------------------------------- tool calls

_WRAPPER = re.compile(r"</?function_calls>")
_INVOKE = re.compile(r'<invoke\s+name="([^"]+)"\s*>(.*?)</invoke>', re.S)
_PARAM = re.compile(r'<parameter\s+name="([^"]+)"[^>]*>(.*?)</parameter>', re.S)
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def _call_name(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_call_name(func.value)}.{func.attr}"
    raise Skip("tool call with a computed function name")


def _normalise_call(obj: Any) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise Skip("tool call JSON without a string name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = _json_or_not(args) if args.strip() else {}
        if args is _NOT_JSON:
            raise Skip("tool call arguments are not JSON")
    if not isinstance(args, dict):
        raise Skip("tool call arguments are not an object")
    return {"name": obj["name"], "arguments": args}


def parse_tool_calls(text: str) -> list[dict]:
    """Calls in a ``function_calls`` string: JSON (object or list), ``<invoke>`` XML, or
    python-call lines ``name(key=value, ...)``. Raises Skip when nothing parses."""
    body = _WRAPPER.sub("", text).strip()
    if not body:
        raise Skip("empty function_calls")
    obj = _json_or_not(body)
    if obj is not _NOT_JSON and obj is not None:
        return [_normalise_call(o) for o in (obj if isinstance(obj, list) else [obj])]
    invokes = _INVOKE.findall(body)
    if invokes:
        calls = []
        for name, inner in invokes:
            args = {}
            for key, value in _PARAM.findall(inner):
                parsed = _json_or_not(value)
                args[key] = value.strip() if parsed is _NOT_JSON else parsed
            calls.append({"name": name, "arguments": args})
        return calls
    try:
        tree = ast.parse(body, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # deep nesting: RecursionError
        raise Skip("unparseable function_calls") from None
    calls = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            raise Skip("function_calls line is not a call")
        call = stmt.value
        if call.args:
            raise Skip("tool call with positional arguments")
        try:
            args = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg is not None}
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            raise Skip("tool call argument is not a literal") from None
        calls.append({"name": _call_name(call.func), "arguments": args})
    if not calls:
        raise Skip("empty function_calls")
    return calls


# ---------------------------------------------------------------------------- layouts


def conversation_turns(messages: Iterable[dict]) -> list[Turn]:
    """ShareGPT / messages / OASST-DE style message lists (OpenAI tool_calls too)."""
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, dict):
            raise Skip("message is not an object")
        kind = _role(message)
        content = _text(message)
        if kind == "call":
            if isinstance(content, str):
                content = _json_or_not(content)
                if content is _NOT_JSON:
                    raise Skip("tool call is not JSON")
            call = _normalise_call(content)
            turns.append(("call", {**call, "preamble": ""}))
            continue
        if kind == "assistant" and (message.get("tool_calls") or message.get("function_calls")):
            raw = message.get("tool_calls") or message.get("function_calls")
            calls = (parse_tool_calls(raw) if isinstance(raw, str)
                     else [_normalise_call(c.get("function", c)) for c in raw])
            preamble = content if isinstance(content, str) else ""
            for i, call in enumerate(calls):
                turns.append(("call", {**call, "preamble": preamble if i == 0 else ""}))
            continue
        if kind == "result" and not isinstance(content, (str, dict)):
            content = json.dumps(content, ensure_ascii=False)
        turns.append((kind, content))
    return turns


def sharegpt_turns(row: dict) -> list[Turn]:
    messages = row.get("conversations", row.get("conversation"))
    if not isinstance(messages, list):
        raise Skip("no conversations list")
    return conversation_turns(messages)


def messages_turns(row: dict) -> list[Turn]:
    if not isinstance(row.get("messages"), list):
        raise Skip("no messages list")
    return conversation_turns(row["messages"])


def dolci_tool_turns(row: dict, keep_tool_definitions: bool = True) -> list[Turn]:
    """OLMo 3 tool use: tool specs in the system message's ``functions`` go into the system text."""
    turns = messages_turns(row)
    if keep_tool_definitions:
        for message in row["messages"]:
            if message.get("role") == "system" and message.get("functions"):
                specs = message["functions"]
                specs = specs if isinstance(specs, str) else json.dumps(specs, ensure_ascii=False)
                at = next((i + 1 for i, (kind, _) in enumerate(turns) if kind == "system"), 0)
                turns.insert(at, ("system", f"Available functions: {specs}"))
                break
    return turns


def alpaca_turns(row: dict, language: str | None = None) -> list[Turn]:
    suffix = "_de" if language == "de" and row.get("instruction_de") and row.get("output_de") else ""
    instruction = (row.get("instruction" + suffix) or "").strip()
    extra = (row.get("input" + suffix) or "").strip()
    output = row.get("output" + suffix) or ""
    if not instruction or not output.strip():
        raise Skip("empty instruction or output")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    turns: list[Turn] = [("system", row["system"])] if isinstance(row.get("system"), str) and row["system"] else []
    return turns + [("user", user), ("assistant", output)]


_GLAIVE_SPLIT = re.compile(r"(?:^|\n+)\s*(USER|ASSISTANT|FUNCTION RESPONSE|BENUTZER|ASSISTENT|FUNKTIONSANTWORT)\s*:\s*")
_GLAIVE_KIND = {"USER": "user", "BENUTZER": "user", "ASSISTANT": "assistant", "ASSISTENT": "assistant",
                "FUNCTION RESPONSE": "result", "FUNKTIONSANTWORT": "result"}
_FUNCTIONCALL = re.compile(r"<functioncall>\s*(\{.*\})", re.S)
_QUOTED_ARGS = re.compile(r"""("arguments"\s*:\s*)'(.*)'(\s*\}\s*)$""", re.S)


def glaive_turns(row: dict) -> list[Turn]:
    chat = row.get("chat")
    if not isinstance(chat, str) or not chat.strip():
        raise Skip("empty chat")
    turns: list[Turn] = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        turns.append(("system", re.sub(r"^\s*SYSTEM\s*:\s*", "", system).strip()))
    parts = _GLAIVE_SPLIT.split(chat)
    for marker, text in zip(parts[1::2], parts[2::2]):
        text = text.replace("<|endoftext|>", "").strip()
        kind = _GLAIVE_KIND[marker]
        match = _FUNCTIONCALL.search(text) if kind == "assistant" else None
        if match:
            raw = _QUOTED_ARGS.sub(r"\1\2\3", match.group(1).strip())
            parsed = _json_or_not(raw)
            if parsed is _NOT_JSON:
                raise Skip("unparseable <functioncall>")
            call = _normalise_call(parsed)
            turns.append(("call", {**call, "preamble": text[: match.start()].strip()}))
        else:
            turns.append((kind, text))
    return turns


def oasst_threads(rows: Iterable[dict]) -> Iterator[tuple[dict, list[Turn]]]:
    """Linearise OASST message trees: from each root, follow the best-ranked assistant reply
    and the first (by creation) prompter reply that has an answer, as deep as the tree goes.
    Yields ``(root_row, turns)``; deleted or review-failed messages are left out."""
    children: dict[str, list[dict]] = {}
    roots: list[dict] = []
    for row in rows:
        if row.get("deleted") or row.get("review_result") is False:
            continue
        parent = row.get("parent_id")
        if parent is None:
            roots.append(row)
        else:
            children.setdefault(parent, []).append(row)

    def best(rows_: list[dict], role: str) -> list[dict]:
        candidates = [r for r in rows_ if r.get("role") == role and (r.get("text") or "").strip()]
        rank = (lambda r: (r.get("rank") is None, r.get("rank") or 0, r.get("created_date") or "", r["message_id"]))
        return sorted(candidates, key=rank)

    for root in sorted(roots, key=lambda r: (r.get("created_date") or "", r["message_id"])):
        if root.get("role") != "prompter":
            continue
        turns: list[Turn] = []
        node = root
        while node is not None:
            answers = best(children.get(node["message_id"], []), "assistant")
            if not answers:
                break
            turns += [("user", node["text"]), ("assistant", answers[0]["text"])]
            follow_ups = [p for p in best(children.get(answers[0]["message_id"], []), "prompter")
                          if best(children.get(p["message_id"], []), "assistant")]
            node = follow_ups[0] if follow_ups else None
        if turns:
            yield root, turns
