"""The agent runtime: conversations in which the model may call workspace tools.

One user turn (``AgentSession.ask``)::

    transcript += <myPT_user>..</myPT_user> <myPT_assistant>          protocol.build_prompt
    loop (at most max_steps model calls):
        generate until <myPT_eot> | </myPT_toolcall> | <|endoftext|> | max_new_tokens
        a <myPT_toolcall> in the block?
          no  -> final answer: transcript += block </myPT_assistant><myPT_eot>; done
          yes -> parse the JSON, run the tool (or make an error result),
                 transcript += block </myPT_assistant> <myPT_toolresult>{json}</myPT_toolresult>
                               <myPT_assistant>; next step

Everything the model gets wrong becomes a tool result it can read and recover from,
never an exception and never an endless loop:

    malformed JSON / no "name"      {"error": "invalid toolcall JSON", "detail": ..., "expected": ...}
    hostile JSON (too deep, huge    the same (parsed by jsonio.loads_strict)
      number, duplicate key, NaN)
    unknown tool, bad arguments     the workspace's own error object (Workspace.call never raises)
    the same call again this turn   {"error": "repeated call", ...}   (not executed again)
    tools disabled (plain chat)     {"error": "tools are not available in this conversation"}
    max_steps model calls           the turn ends (stop_reason "max_steps") with a fallback answer
    max_repeated_calls repeats      the turn ends (stop_reason "loop") with a fallback answer

The transcript is exactly the token sequence the model saw and produced (so it can be
inspected and is what a KV cache would hold); for well-formed turns it equals
``protocol.serialize_episode`` of ``session.messages`` (tests/test_agent.py checks this).
Tool results are serialized as the protocol does (``toolresult_text``: JSON, ensure_ascii off).

``profile`` (protocol_profiles: ``mypt_chat``, ``mypt_tool``) talks to a legacy MyPT
checkpoint in the format it was trained on: its prompt layout ("\\n" between blocks for
mypt_tool, as the original agent controller sends), no <myPT_eot> between turns, and
</myPT_assistant> as a stop token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from mypt_lightning.inference.generation import GenerationResult
from mypt_lightning.tokens.protocol import (
    AssistantOutput,
    parse_assistant_output,
    toolcall_json,
    toolresult_text,
)
from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE,
    ASSISTANT_OPEN,
    CITE_CLOSE,
    CITE_OPEN,
    ENDOFTEXT_ID,
    EOT,
    SYSTEM_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    TOOLCALL_CLOSE,
    TOOLCALL_OPEN,
    TOOLRESULT_OPEN,
    USER_OPEN,
)

AGENT_STOP_IDS = frozenset({EOT, ENDOFTEXT_ID, TOOLCALL_CLOSE})
# Tags that must never appear inside one assistant block: their presence means the model
# ran past its turn ("bleed-through").
FOREIGN_TAGS = frozenset({SYSTEM_OPEN, USER_OPEN, ASSISTANT_OPEN, TOOLRESULT_OPEN})
TOOLCALL_EXAMPLE = '{"name": "workspace.search", "query": "..."}'
FALLBACK_ANSWERS = {
    "max_steps": "I could not finish this request within {n} tool steps.",
    "loop": "I stopped because I kept repeating the same tool call.",
    "context_full": "The conversation is too long for my context window; please start a new one.",
}


@dataclass
class ToolStep:
    """One assistant block that called (or tried to call) a tool, and what came back."""

    text: str  # the block as generated (tags as strings)
    think: str | None
    name: str | None  # None when the JSON was unusable
    arguments: dict | None
    result: dict
    error: str | None = None  # invalid_json | unknown_tool | bad_arguments | repeated_call | tools_disabled | tool_error


@dataclass
class TurnResult:
    """What happened in one user turn."""

    answer: str | None  # the model's final answer text (None if it never gave one)
    think: str | None = None
    cite: str | None = None
    steps: list[ToolStep] = field(default_factory=list)
    stop_reason: str = "answer"  # answer | max_steps | loop | max_new_tokens | context_full
    final_text: str = ""  # the final block as generated
    clean_end: bool = False  # final block ended with exactly </myPT_assistant><myPT_eot>, no foreign tags
    fallback: str | None = None  # the runtime's answer when the model gave none
    generations: list[GenerationResult] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.stop_reason == "answer"


def _error_kind(result: dict) -> str | None:
    if not isinstance(result, dict) or "error" not in result:
        return None
    message = str(result.get("error"))
    return {"unknown tool": "unknown_tool", "bad arguments": "bad_arguments"}.get(message, "tool_error")


def _shrink(result: dict, max_chars: int) -> dict:
    """Cut the longest strings of a tool result until its JSON fits ``max_chars`` (still valid JSON)."""
    if len(toolresult_text(result)) <= max_chars:
        return result
    result = json.loads(json.dumps(result))  # deep copy
    result["truncated"] = True

    def strings(node, path=()):
        if isinstance(node, str):
            yield path, node
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from strings(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from strings(v, path + (i,))

    for _ in range(100):
        excess = len(toolresult_text(result)) - max_chars
        if excess <= 0:
            break
        path, longest = max(strings(result), key=lambda pv: len(pv[1]), default=((), ""))
        if not path or len(longest) <= 20:
            break
        parent = result
        for key in path[:-1]:
            parent = parent[key]
        keep = max(20, len(longest) - excess - 20)
        parent[path[-1]] = longest[:keep] + " [...]"
    return result


class AgentSession:
    """A multi-turn conversation with a policy, optionally with workspace tools.

    ``policy(prompt_ids, max_new_tokens=, stop_ids=, on_token=) -> GenerationResult``
    (``generation.ModelPolicy`` or ``TextPolicy``). ``workspace``: an object with
    ``call(name, arguments) -> dict`` (``mypt_lightning.workspace.store.Workspace``); None
    disables tools (a tool call then gets an error result and the model may answer).

    >>> session = AgentSession(ModelPolicy(model), Workspace("workspace/docs"), system=AGENTIC_STANDARD_PROMPT)  # doctest: +SKIP
    >>> turn = session.ask("How much is the hotel allowance?")  # doctest: +SKIP
    >>> turn.answer, turn.cite, [s.name for s in turn.steps]    # doctest: +SKIP
    """

    def __init__(self, policy, workspace=None, system: str | None = None, *, max_steps: int = 6,
                 max_new_tokens: int = 512, max_repeated_calls: int = 2, max_result_chars: int = 8000,
                 context_size: int | None = None, tokenizer=None, profile=None):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.policy = policy
        self.workspace = workspace
        self.system = system
        self.max_steps = max_steps
        self.max_new_tokens = max_new_tokens
        self.max_repeated_calls = max_repeated_calls
        self.max_result_chars = max_result_chars
        model = getattr(policy, "model", None)
        self.context_size = context_size or (model.config.block_size if model is not None else None) or \
            getattr(policy, "context_size", 4096)
        if tokenizer is None:
            from mypt_lightning.tokens.tokenizer import get_tokenizer

            tokenizer = get_tokenizer()
        self.tok = tokenizer
        from mypt_lightning.tokens.protocol_profiles import get_profile

        self.profile = get_profile(profile)
        self.stop_ids = AGENT_STOP_IDS | (self.profile.stop_ids() if self.profile.legacy else frozenset())
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.tokens: list[int] = []
        self.messages: list[dict] = []
        self.well_formed = True  # tokens == serialize_episode(messages) (every block as the protocol writes it)

    # ------------------------------------------------------------------ turns
    def ask(self, user: str, context: str | None = None, *, on_token: Callable[[int], None] | None = None,
            on_event: Callable[[str, Any], None] | None = None) -> TurnResult:
        """Run one user turn to its end. ``on_token``: every generated id as it comes;
        ``on_event(kind, payload)``: "toolresult" (ToolStep) and "fallback" (str) for displays."""
        user_msg: dict = {"role": "user", "content": user}
        if context:
            user_msg["context"] = context
        if not self.tokens:
            self.tokens = self.profile.build_prompt({"system": self.system, "messages": [user_msg]}, tokenizer=self.tok)
        else:
            self.tokens = self.tokens + self.profile.continue_prompt(user_msg, tokenizer=self.tok)
        self.messages.append(user_msg)
        turn = TurnResult(answer=None)
        seen_calls: dict[str, int] = {}
        repeats = 0
        for _ in range(self.max_steps):
            room = self.context_size - len(self.tokens)
            if room < 2:
                return self._end(turn, "context_full", on_event)
            limit = min(self.max_new_tokens, room - 1)
            gen = self.policy(self.tokens, max_new_tokens=limit, stop_ids=self.stop_ids, on_token=on_token)
            if gen.stop_reason == "max_new_tokens" and limit < self.max_new_tokens:
                gen.stop_reason = "context_full"  # the budget was cut to what the context had left
            turn.generations.append(gen)
            parsed = parse_assistant_output(gen.tokens, tokenizer=self.tok)
            block = self._block(gen.tokens)
            if TOOLCALL_OPEN not in block:
                return self._final(turn, gen, parsed, block)
            step, repeated = self._tool_step(gen, parsed, block, seen_calls)
            repeats += repeated
            turn.steps.append(step)
            if on_event is not None:
                on_event("toolresult", step)
            if gen.stop_reason == "context_full":
                return self._end(turn, "context_full", on_event)
            if repeats >= self.max_repeated_calls:
                return self._end(turn, "loop", on_event)
        return self._end(turn, "max_steps", on_event)

    @staticmethod
    def _block(tokens: list[int]) -> list[int]:
        """The assistant block's content: up to (not including) the first closing/stop tag,
        through </myPT_toolcall> for a tool call."""
        out = []
        for t in tokens:
            if t in (ASSISTANT_CLOSE, EOT, ENDOFTEXT_ID):
                break
            out.append(t)
            if t == TOOLCALL_CLOSE:
                break
        return out

    def _final(self, turn: TurnResult, gen: GenerationResult, parsed: AssistantOutput, block: list[int]) -> TurnResult:
        turn.answer, turn.think, turn.cite = parsed.answer, parsed.think, parsed.cite
        turn.final_text = self.tok.decode(gen.tokens)
        turn.clean_end = self.profile.clean_end(gen.tokens) and not FOREIGN_TAGS & set(gen.tokens)
        # a stop token (<myPT_eot>, or <|endoftext|>: ended, though not cleanly) means the model
        # finished its answer; otherwise it ran into max_new_tokens or the context end
        turn.stop_reason = "answer" if gen.stop_reason == "stop_token" else gen.stop_reason
        self.tokens = self.tokens + block + self.profile.end_of_answer_ids()
        message = parsed.to_message()
        self.well_formed &= block == self._canonical(message)
        self.messages.append(message)
        return turn

    def _canonical(self, msg: dict) -> list[int]:
        """The content of the assistant block the protocol serializes for ``msg`` (no tags around it)."""
        enc = self.tok.encode_text
        out = [THINK_OPEN, *enc(msg["think"]), THINK_CLOSE] if msg.get("think") else []
        if msg["role"] == "assistant_toolcall":
            return out + [TOOLCALL_OPEN, *enc(toolcall_json(msg["name"], msg["arguments"])), TOOLCALL_CLOSE]
        out += enc(msg["content"])
        return out + ([CITE_OPEN, *enc(msg["cite"]), CITE_CLOSE] if msg.get("cite") else [])

    def _tool_step(self, gen: GenerationResult, parsed: AssistantOutput, block: list[int],
                   seen_calls: dict[str, int]) -> tuple[ToolStep, int]:
        """Execute (or refuse) the call in ``block``; extend the transcript. Returns (step, 1 if repeated)."""
        repeated = 0
        name = arguments = None
        if parsed.toolcall is None:
            error = "invalid_json"
            # hostile JSON too (deep nesting, huge numbers, duplicate keys): the model reads why and retries
            detail = (parsed.toolcall_error or "no JSON object found").removeprefix("invalid toolcall JSON: ")
            result = {"error": "invalid toolcall JSON", "detail": detail, "expected": TOOLCALL_EXAMPLE}
        else:
            name, arguments = parsed.toolcall["name"], parsed.toolcall["arguments"]
            key = json.dumps({"name": name, **arguments}, sort_keys=True, ensure_ascii=False)
            if key in seen_calls:
                repeated = 1
                error = "repeated_call"
                result = {"error": "repeated call", "tool": name,
                          "detail": f"this exact call was already made in this turn (step {seen_calls[key] + 1}); "
                                    "use its result above or make a different call"}
            elif self.workspace is None:
                error = "tools_disabled"
                result = {"error": "tools are not available in this conversation", "tool": name,
                          "detail": "answer without tools"}
            else:
                seen_calls[key] = len(seen_calls)
                result = self.workspace.call(name, arguments)
                error = _error_kind(result)
            result = _shrink(result, self.max_result_chars)
        step = ToolStep(text=self.tok.decode(gen.tokens), think=parsed.think, name=name, arguments=arguments,
                        result=result, error=error)
        closed_call = block[-1:] == [TOOLCALL_CLOSE]
        self.tokens = (self.tokens + block + ([] if closed_call else [TOOLCALL_CLOSE])
                       + self.profile.after_toolcall_ids(self.tok.encode_text(self.profile.toolresult_text(result))))
        msg = {"role": "assistant_toolcall", "name": name, "arguments": arguments}
        if parsed.think:
            msg["think"] = parsed.think
        if parsed.toolcall is not None and block == self._canonical(msg):
            self.messages.append(msg)
        else:
            self.well_formed = False
            self.messages.append({"role": "assistant", "content": self.tok.decode(block)})  # for the log only
        self.messages.append({"role": "toolresult", "name": name or "invalid", "content": result})
        return step, repeated

    def _end(self, turn: TurnResult, reason: str, on_event) -> TurnResult:
        """End a turn the model did not finish: a runtime-written answer keeps the transcript valid."""
        turn.stop_reason = reason
        turn.fallback = FALLBACK_ANSWERS[reason].format(n=self.max_steps)
        if on_event is not None:
            on_event("fallback", turn.fallback)
        if self.tokens and self.tokens[-1] == ASSISTANT_OPEN:
            self.tokens = self.tokens + self.tok.encode_text(turn.fallback) + self.profile.end_of_answer_ids()
        self.messages.append({"role": "assistant", "content": turn.fallback})
        return turn


# ============================================================================ display


class ChatRenderer:
    """Streams an assistant's tokens as readable text: tags hidden, think shown only when
    asked (as ``[think: ...]``), tool calls and citations marked.

    ``write(str)`` receives the text; feed ids with ``push(id)``; ``end()`` after a block.
    """

    def __init__(self, write: Callable[[str], None], show_think: bool = False, tokenizer=None):
        from mypt_lightning.inference.generation import IncrementalDecoder

        self.write = write
        self.show_think = show_think
        self.decoder = IncrementalDecoder(tokenizer, skip_special=True)
        self.tok = self.decoder.tok
        self.in_think = False

    def push(self, token_id: int) -> None:
        t = int(token_id)
        if self.tok.is_special(t):
            self._emit(self.decoder.flush())
            if t == THINK_OPEN:
                self.in_think = True
                if self.show_think:
                    self.write("[think: ")
            elif t == THINK_CLOSE:
                if self.show_think and self.in_think:
                    self.write("]\n")
                self.in_think = False
            elif t == TOOLCALL_OPEN:
                self.write("[tool call] ")
            elif t == TOOLCALL_CLOSE:
                self.write("\n")
            elif t == CITE_OPEN:
                self.write(" [source: ")
            elif t == CITE_CLOSE:
                self.write("]")
            return
        self._emit(self.decoder.push(t))

    def _emit(self, text: str) -> None:
        if text and (self.show_think or not self.in_think):
            self.write(text)

    def end(self) -> None:
        self._emit(self.decoder.flush())
        self.in_think = False


def open_workspace(path=None):
    """``Workspace`` of a folder given as the workspace (``workspace/``, its ``docs/`` is used)
    or as the docs folder itself; None = the bundled one. Problems are UserErrors."""
    from pathlib import Path

    from mypt_lightning.errors import UserError
    from mypt_lightning.workspace.store import Workspace, WorkspaceLoadError

    docs = None
    if path is not None:
        docs = Path(path)
        if not docs.is_dir():
            raise UserError(f"workspace {path}: not a folder")
        if not (docs / "index.json").exists() and (docs / "docs").is_dir():
            docs = docs / "docs"
    try:
        return Workspace(docs)
    except (WorkspaceLoadError, OSError) as exc:
        raise UserError(f"workspace {path}: {exc}") from None


CHAT_HELP = "commands: /reset (new conversation), /exit or /quit (leave); Ctrl-D leaves too"


def chat_loop(session: AgentSession, read_line: Callable[[str], str | None], write: Callable[[str], None], *,
              show_think: bool = False, show_tool_results: bool = True, result_chars: int = 300) -> int:
    """An interactive conversation: ``read_line(prompt)`` returns the user's line (None at
    end of input), the assistant's reply is streamed through ``write``. Returns the number
    of turns. Used by tools/chat.py (stdin/stdout) and the tests (scripted input)."""
    turns = 0
    while True:
        line = read_line("you> ")
        if line is None:
            write("\n")
            return turns
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return turns
        if text == "/reset":
            session.reset()
            write("[new conversation]\n")
            continue
        if text == "/help":
            write(CHAT_HELP + "\n")
            continue
        renderer = ChatRenderer(write, show_think=show_think, tokenizer=session.tok)

        def on_event(kind: str, payload, renderer=renderer) -> None:
            renderer.end()
            if kind == "toolresult" and show_tool_results:
                shown = toolresult_text(payload.result)
                shown = shown if len(shown) <= result_chars else shown[: result_chars - 3] + "..."
                write(f"[tool result] {shown}\n")
            elif kind == "fallback":
                write(f"{payload}")

        write("mypt> ")
        turn = session.ask(text, on_token=renderer.push, on_event=on_event)
        renderer.end()
        write("\n")
        if turn.stop_reason not in ("answer",):
            write(f"[turn ended: {turn.stop_reason}]\n")
        turns += 1


__all__ = ["AGENT_STOP_IDS", "AgentSession", "CHAT_HELP", "ChatRenderer", "ToolStep", "TurnResult", "chat_loop",
           "open_workspace"]
