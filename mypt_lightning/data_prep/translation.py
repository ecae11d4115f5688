"""Translate episodes: extract the strings, translate them (DeepL), put them back, pair EN+DE.

    extract    episodes.jsonl -> strings.jsonl    {"key": "12:messages.0.content", "text": "..."}
    translate  strings.jsonl  -> translated.jsonl (same keys; resumable; DeepL HTTP API)
    recombine  episodes.jsonl + translated.jsonl -> episodes_de.jsonl (language set, provenance
               in _meta.translated_from / _meta.translation_of)
    merge      en.jsonl + de.jsonl -> bilingual.jsonl, each pair sharing _meta.pair_id (so
               ``prepare_sft --split_by_field _meta.pair_id`` keeps a pair in one split)

A key is ``RECORD:PATH``: the record's number among the file's valid records (0-based) and
the dotted path of the string inside it. Translated by default: system, user content and
context, assistant content and think, assistant_context, replay text; with options also
tool-call arguments and string tool results. Never: cite (document ids), tool names.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError, validate_episode

from .jsonl import AtomicTextWriter, ErrorLog, dumps, iter_lines, iter_records, parse_line
from .textnorm import stable_hash


def translatable(record: dict, *, tool_arguments: bool = False, tool_results: bool = False
                 ) -> Iterator[tuple[str, str]]:
    """``(path, text)`` of every string to translate in one record."""
    if record.get("_replay") is True:
        yield "text", record["text"]
        return
    if record.get("system"):
        yield "system", record["system"]
    for i, m in enumerate(record["messages"]):
        role, base = m["role"], f"messages.{i}"
        if role in ("user", "assistant", "assistant_context"):
            yield f"{base}.content", m["content"]
        if role == "user" and m.get("context"):
            yield f"{base}.context", m["context"]
        if role in ("assistant", "assistant_toolcall") and m.get("think"):
            yield f"{base}.think", m["think"]
        if role == "assistant_toolcall" and tool_arguments:
            for key, value in m["arguments"].items():
                if isinstance(value, str) and value:
                    yield f"{base}.arguments.{key}", value
        if role == "toolresult" and tool_results and isinstance(m["content"], str):
            yield f"{base}.content", m["content"]


def _set_path(record: dict, path: str, value: str) -> None:
    target: Any = record
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def extract(input_path: str | Path, output_path: str | Path, on_error: str = "stop", **options) -> dict[str, int]:
    errors = ErrorLog(on_error)
    records = strings = 0
    with AtomicTextWriter(output_path) as out:
        for index, (_, record) in enumerate(iter_records([input_path], errors)):
            records += 1
            for path, text in translatable(record, **options):
                out.write(dumps({"key": f"{index}:{path}", "text": text}) + "\n")
                strings += 1
    return {"records": records, "strings": strings, "skipped": errors.count}


def load_translations(path: str | Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for number, line in iter_lines(path):
        item = parse_line(line, f"{path}:{number}", validate=False)
        if not isinstance(item.get("key"), str) or not isinstance(item.get("text"), str):
            raise EpisodeError(f"{path}:{number}", "key/text", "a translation line needs string 'key' and 'text'")
        table[item["key"]] = item["text"]
    return table


def recombine(input_path: str | Path, translations_path: str | Path, output_path: str | Path, language: str,
              on_error: str = "stop", **options) -> dict[str, int]:
    """Episodes with every translatable string replaced; a record missing any translation is
    an error (stop) or skipped and counted (skip)."""
    table = load_translations(translations_path)
    errors = ErrorLog(on_error)
    written = 0
    source_name = Path(input_path).name
    with AtomicTextWriter(output_path) as out:
        for index, (where, record) in enumerate(iter_records([input_path], errors)):
            translated = copy.deepcopy(record)
            missing = None
            for path, _ in translatable(record, **options):
                key = f"{index}:{path}"
                if key not in table:
                    missing = path
                    break
                _set_path(translated, path, table[key])
            try:
                if missing is not None:
                    raise EpisodeError(where, missing, f"no translation for key {index}:{missing}")
                meta = translated.setdefault("_meta", {})
                meta["translated_from"] = record.get("language") or "unknown"
                meta["translation_of"] = f"{source_name}:{index}"
                translated["language"] = language.lower()
                validate_episode(translated, where=where)
            except EpisodeError as exc:
                errors.handle(exc)
                continue
            out.write(dumps(translated) + "\n")
            written += 1
    return {"written": written, "skipped": errors.count}


def merge_bilingual(first_path: str | Path, second_path: str | Path, output_path: str | Path,
                    mode: str = "interleave", on_error: str = "stop") -> dict[str, int]:
    """Pair the records of two files (by ``_meta.translation_of`` when the second file has it,
    else by position), give each pair one ``_meta.pair_id`` and write them interleaved
    (A1 B1 A2 B2 ...) or concatenated (all A, then all B)."""
    if mode not in ("interleave", "concat"):
        raise UserError(f"mode must be interleave or concat, got {mode!r}")
    errors = ErrorLog(on_error)
    first = [r for _, r in iter_records([first_path], errors)]
    second = [r for _, r in iter_records([second_path], errors)]
    name = Path(first_path).name
    by_index: dict[int, list[dict]] = {}
    unpaired: list[dict] = []
    for position, record in enumerate(second):
        origin = (record.get("_meta") or {}).get("translation_of")
        if isinstance(origin, str) and origin.rpartition(":")[0] == name:
            by_index.setdefault(int(origin.rpartition(":")[2]), []).append(record)
        elif len(second) == len(first):
            by_index.setdefault(position, []).append(record)
        else:
            unpaired.append(record)
    pairs = 0
    out_a, out_b = [], []
    for index, record in enumerate(first):
        partners = by_index.get(index, [])
        group = [record] + partners
        if partners:
            pairs += 1
            pair_id = f"pair-{stable_hash(json.dumps(record, sort_keys=True, ensure_ascii=False)):016x}"
            for r in group:
                r.setdefault("_meta", {})["pair_id"] = pair_id
        if mode == "interleave":
            out_a.extend(group)
        else:
            out_a.append(record)
            out_b.extend(partners)
    records = out_a + out_b + unpaired
    with AtomicTextWriter(output_path) as out:
        for record in records:
            out.write(dumps(record) + "\n")
    return {"written": len(records), "pairs": pairs, "unpaired": len(unpaired) + len(first) - pairs,
            "skipped": errors.count}


def iter_strings(path: str | Path) -> Iterable[dict]:
    for number, line in iter_lines(path):
        item = parse_line(line, f"{path}:{number}", validate=False)
        if not isinstance(item.get("key"), str) or not isinstance(item.get("text"), str):
            raise EpisodeError(f"{path}:{number}", "key/text", "a line needs string 'key' and 'text'")
        yield item
