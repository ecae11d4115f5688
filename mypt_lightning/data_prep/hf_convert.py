"""Convert a Hugging Face dataset (hub name or local file/folder) to episode JSONL.

    convert_dataset("OpenAssistant/oasst2", "oasst2.jsonl", languages=["en", "de"], max_examples=10000)

Rows are read with the ``datasets`` library (local .jsonl/.json/.parquet/.csv files and
folders work offline; hub names stream), the layout is detected from the column names
(or forced with ``layout=``), each row becomes a turn list (``hf_layouts``) and then an
episode that passes ``validate_episode``. Rows that cannot be represented (no answer, a
toolcall without its result, parallel tool calls with one combined result, an unknown
role, ...) are skipped and counted by reason; nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from mypt_lightning.errors import UserError
from mypt_lightning.jsonio import loads_strict
from mypt_lightning.tokens.protocol import EpisodeError, validate_episode

from . import hf_layouts as L
from .jsonl import AtomicTextWriter, dumps
from .textnorm import guess_language

LAYOUTS = ("oasst", "alpaca", "sharegpt", "messages", "dolci_tools", "glaive")
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def load_rows(dataset: str, *, split: str = "train", config: str | None = None) -> Iterable[dict]:
    """Rows of a local file/folder (offline) or a hub dataset (streamed)."""
    import datasets

    path = Path(dataset)
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get("".join(path.suffixes[-1:]).lower())
            if builder is None:
                raise UserError(f"{path}: unknown file type (use .jsonl, .json, .parquet, .csv or .arrow)")
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        if path.is_dir():
            return datasets.load_dataset(str(path), config, split=split)
        return datasets.load_dataset(dataset, config, split=split, streaming=True)
    except UserError:
        raise
    except Exception as exc:  # the datasets library raises many types; all mean "cannot read it"
        raise UserError(f"cannot load dataset {dataset!r} (split {split!r}): {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''} -- without network access, "
                        "download the data files and pass their local path") from None


def detect_layout(row: dict) -> str:
    """The layout of a dataset from its first row's columns (and message shapes)."""
    columns = set(row)
    if {"message_id", "parent_id", "role", "text"} <= columns:
        return "oasst"
    if {"system", "chat"} <= columns:
        return "glaive"
    if "instruction" in columns and "output" in columns:
        return "alpaca"
    if "conversations" in columns or "conversation" in columns:
        return "sharegpt"
    if "messages" in columns:
        messages = row["messages"] or []
        tools = any(isinstance(m, dict) and (m.get("role") in ("environment", "tool") or m.get("function_calls")
                                             or m.get("tool_calls") or m.get("functions")) for m in messages)
        return "dolci_tools" if tools else "messages"
    raise UserError(f"cannot tell the layout from the columns {sorted(columns)}; pass --layout "
                    f"({', '.join(LAYOUTS)})")


def _language(row: dict, turns: list) -> str:
    for key in ("lang", "language"):
        value = row.get(key)
        if isinstance(value, str) and value:
            return value.split("-")[0].split("_")[0].lower()[:2]
    text = " ".join(t for kind, t in turns if kind in ("user", "assistant") and isinstance(t, str))
    return guess_language(text)


def _pair_calls(turns: list) -> list:
    """Interleave a run of N calls followed by N results as call, result, call, result: the
    protocol has one call per assistant block, answered by its result."""
    out, i = [], 0
    while i < len(turns):
        if turns[i][0] != "call":
            out.append(turns[i])
            i += 1
            continue
        j = i
        while j < len(turns) and turns[j][0] == "call":
            j += 1
        k = j
        while k < len(turns) and turns[k][0] == "result":
            k += 1
        calls, results = turns[i:j], turns[j:k]
        if len(calls) > 1 and len(calls) != len(results):
            raise L.Skip("parallel tool calls whose results cannot be told apart")
        for n, call in enumerate(calls):
            out.append(call)
            if n < len(results):
                out.append(results[n])
        out += results[len(calls):]
        i = k
    return out


def build_episode(turns: list, *, system_prompt: str | None = None) -> dict:
    """Turn list -> episode messages (merging repeats, turning preambles into think), or Skip."""
    turns = _pair_calls(turns)
    systems = [t for kind, t in turns if kind == "system" and isinstance(t, str) and t.strip()]
    messages: list[dict] = []
    for kind, value in turns:
        if kind == "system":
            continue
        last = messages[-1] if messages else None
        if kind in ("user", "assistant"):
            if not isinstance(value, str) or not value.strip():
                raise L.Skip(f"empty {kind} message")
            if last is not None and last["role"] == kind:
                last["content"] += "\n\n" + value  # consecutive messages of one speaker
            else:
                messages.append({"role": kind, "content": value})
        elif kind == "call":
            message = {"role": "assistant_toolcall", "name": value["name"], "arguments": value["arguments"]}
            if value.get("preamble", "").strip():
                message["think"] = value["preamble"].strip()
            messages.append(message)
        elif kind == "result":
            if last is None or last["role"] != "assistant_toolcall":
                raise L.Skip("tool result without a preceding call")
            content = value
            if isinstance(value, str):
                try:
                    parsed = loads_strict(value)
                    content = parsed if isinstance(parsed, dict) else value
                except EpisodeError:
                    pass
            messages.append({"role": "toolresult", "name": last["name"], "content": content or "(empty)"})
    while messages and messages[0]["role"] != "user":
        messages.pop(0)
    last_answer = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    messages = messages[: last_answer + 1]
    if not messages:
        raise L.Skip("no user message followed by an assistant answer")
    record: dict[str, Any] = {}
    system = system_prompt if system_prompt is not None else "\n\n".join(systems)
    if system:
        record["system"] = system
    record["messages"] = messages
    return record


def convert_rows(rows: Iterable[dict], layout: str | None = None, *, languages: list[str] | None = None,
                 max_examples: int | None = None, system_prompt: str | None = None, min_turns: int = 1,
                 source: str = "", keep_tool_definitions: bool = True, skipped: Counter | None = None,
                 info: dict | None = None) -> Iterator[dict]:
    """Episodes from ``rows``; the reason of every skipped row is counted in ``skipped`` and
    the layout used is stored in ``info["layout"]``."""
    skipped = skipped if skipped is not None else Counter()
    info = info if info is not None else {}
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    layout = layout or detect_layout(first)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    info["layout"] = layout
    wanted = set(languages) if languages else None

    def all_rows() -> Iterator[dict]:
        yield first
        yield from rows

    if layout == "oasst":
        pairs: Iterable = L.oasst_threads(all_rows())
    else:
        pairs = ((row, None) for row in all_rows())
    written = 0
    for number, (row, turns) in enumerate(pairs):
        try:
            if turns is None:
                lang_hint = (sorted(wanted)[0] if wanted and len(wanted) == 1 else None)
                turns = {"alpaca": lambda r: L.alpaca_turns(r, lang_hint), "sharegpt": L.sharegpt_turns,
                         "messages": L.messages_turns, "glaive": L.glaive_turns,
                         "dolci_tools": lambda r: L.dolci_tool_turns(r, keep_tool_definitions)}[layout](row)
            language = _language(row, turns)
            if wanted is not None and language not in wanted:
                raise L.Skip(f"language {language!r} not selected")
            record = build_episode(turns, system_prompt=system_prompt)
            if sum(m["role"] == "user" for m in record["messages"]) < min_turns:
                raise L.Skip(f"fewer than {min_turns} turns")
            record["language"] = language
            meta = {"source": source, "layout": layout}
            row_id = row.get("id", row.get("message_tree_id", row.get("message_id")))
            meta["id"] = str(row_id) if row_id is not None else str(number)
            record["_meta"] = meta
            validate_episode(record, where=f"{source} row {number}")
        except L.Skip as exc:
            skipped[str(exc)] += 1
            continue
        except EpisodeError as exc:
            skipped[f"invalid episode: {exc.field}: {exc.reason}"[:120]] += 1
            continue
        yield record
        written += 1
        if max_examples is not None and written >= max_examples:
            return


def convert_dataset(dataset: str, output: str | Path, *, split: str = "train", config: str | None = None,
                    layout: str | None = None, **kwargs) -> dict[str, Any]:
    """Load, convert and write atomically; returns counts for the summary."""
    rows = load_rows(dataset, split=split, config=config)
    skipped: Counter = Counter()
    languages: Counter = Counter()
    info: dict[str, Any] = {}
    n = 0
    with AtomicTextWriter(output) as out:
        for record in convert_rows(rows, layout, source=dataset, skipped=skipped, info=info, **kwargs):
            out.write(dumps(record) + "\n")
            languages[record["language"]] += 1
            n += 1
    if n == 0:
        Path(output).unlink(missing_ok=True)
        raise UserError(f"no episodes converted from {dataset!r}; skipped: {dict(skipped.most_common(5))}")
    return {"output": str(output), "episodes": n, "skipped": skipped, "languages": languages,
            "layout": info.get("layout", layout)}
