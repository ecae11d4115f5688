"""Hostile JSON never crashes a reader: every JSON text of the project goes through
``jsonio.loads_strict``, so deep nesting, huge numbers, duplicate keys, NaN, invalid UTF-8
and lone surrogates are a bad record named FILE:LINE (counted with --on-error skip, one line
and exit 2 with stop) or, from the model, a tool error the agent recovers from."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from mypt_lightning.tokens.episode_schema import EpisodeError
from mypt_lightning.jsonio import MAX_DEPTH, MAX_INT_DIGITS, loads_strict

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
GOOD_LINE = json.dumps(GOOD).encode()
# name -> (line, what the error says); each would crash or silently change a reader without the fix
HOSTILE = {
    "deep list": (b"[" * 10000, f"nested deeper than {MAX_DEPTH} levels"),
    "deep object": (b'{"a":' * 10000, f"nested deeper than {MAX_DEPTH} levels"),
    "deep closed": (b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", f"nested deeper than {MAX_DEPTH} levels"),
    "huge int": (b'{"messages": ' + b"1" * 10000 + b"}", "integer with 10000 digits"),
    "duplicate key": (GOOD_LINE[:-1] + b', "messages": [{"role": "user", "content": "other"}, '
                                       b'{"role": "assistant", "content": "b"}]}', "duplicate key 'messages'"),
    "NaN": (b'{"messages": NaN}', "NaN is not valid JSON"),
    "invalid UTF-8": (b'{"messages": [{"role": "user", "content": "q\xff"}, {"role": "assistant", "content": "a"}]}',
                      "invalid UTF-8: byte 0xff at byte offset 44"),
    "lone surrogate": (b'{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}',
                       "invalid Unicode (lone surrogate \\ud800) at character 43"),
}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def one_hostile(tmp_path: Path, kind: str) -> Path:
    return write_lines(tmp_path / "in.jsonl", [GOOD_LINE, HOSTILE[kind][0], GOOD_LINE])


def all_hostile(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.jsonl", [GOOD_LINE] + [line for line, _ in HOSTILE.values()] + [GOOD_LINE])


def cli(tool: str):
    return runpy.run_path(str(TOOLS / tool))["main"]


def assert_one_line_error(code: int, err: str, where: str, reason: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{where}: invalid JSON: {reason}" in err, err


# ------------------------------------------------------------------ the parser itself
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_loads_strict_names_the_place_and_the_reason(kind):
    line, reason = HOSTILE[kind]
    with pytest.raises(EpisodeError) as info:
        loads_strict(line, "f.jsonl:7")
    assert str(info.value).startswith(f"f.jsonl:7: invalid JSON: {reason}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, reason", [
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
    ("[" * 500 + "]" * 500, "nested deeper"),  # below the decoder's own recursion limit
    ("[" * 10**6, "nested deeper"),
    ('{"a": ' + "9" * (MAX_INT_DIGITS + 1) + "}", f"integer with {MAX_INT_DIGITS + 1} digits"),
    ("-" + "9" * 5000, "integer with 5000 digits"),
    ('{"a": 1e999}', "out of range"),
    ('{"a": -Infinity}', "-Infinity is not valid JSON"),
    ('{"a": {"b": 1, "b": 1}}', "duplicate key 'b'"),
    ('"\\udc00"', "lone surrogate \\udc00"),
    ('"\\ud800\\ud800"', "lone surrogate \\ud800"),
    ('"\\ud800\\\\\\udc00"', "lone surrogate \\ud800"),  # an escaped backslash between the halves: no pair
    ('{"\\ud800": 1}', "lone surrogate"),
    ("\"a\ud800\"", "lone surrogate) at character 2"),  # a raw one in a str
    ('{"a": ', "Expecting value"),
    (b'\xef\xbb\xbf{"a": "\xff"}', "invalid UTF-8: byte 0xff at byte offset 10"),  # counted with the BOM
])
def test_loads_strict_rejects(text, reason):
    with pytest.raises(EpisodeError) as info:
        loads_strict(text, "x")
    assert str(info.value).startswith("x: invalid JSON: ") and reason in str(info.value), str(info.value)


@pytest.mark.parametrize("text, value", [
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, None),  # exactly the limit
    ('["' + "[" * 200 + '", "]]]]\\"\\\\"]', ["[" * 200, ']]]]"\\']),  # brackets inside strings do not nest
    ('{"a": ' + "9" * MAX_INT_DIGITS + "}", {"a": int("9" * MAX_INT_DIGITS)}),
    ('"\\ud83d\\ude00 \\uD83D\\uDE00"', "\U0001F600 \U0001F600"),  # escaped surrogate pairs
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then text
    (b'\xef\xbb\xbf{"a": "\xc3\xa4"}', {"a": "\u00e4"}),  # UTF-8 bytes with a BOM
    ('{"a": 1.5e300, "b": -0.0, "c": [true, false, null]}', {"a": 1.5e300, "b": -0.0, "c": [True, False, None]}),
])
def test_loads_strict_accepts_valid_json(text, value):
    result = loads_strict(text)
    if value is not None:
        assert result == value
    assert result == json.loads(text)


# ------------------------------------------------------------------ prepare_sft
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_prepare_sft_stop_names_file_and_line(tmp_path, capsys, kind):
    src = one_hostile(tmp_path, kind)
    code = cli("prepare_sft.py")(["--input", str(src), "--output_dir", str(tmp_path / "ds"), "--no_progress",
                                  "--num_workers", "1"])
    assert_one_line_error(code, capsys.readouterr().err, f"{src}:2", HOSTILE[kind][1])
    assert not (tmp_path / "ds").exists()


def test_prepare_sft_skip_counts_every_hostile_record(tmp_path, capsys):
    src = all_hostile(tmp_path)
    code = cli("prepare_sft.py")(["--input", str(src), "--output_dir", str(tmp_path / "ds"), "--no_progress",
                                  "--num_workers", "1", "--val_split", "0", "--on-error", "skip"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{len(HOSTILE)} bad records skipped" in out
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text(encoding="utf-8"))
    assert meta["counts"]["episodes"] == 2 and meta["counts"]["bad_records_skipped"] == len(HOSTILE)
    assert all(f"{src}:{n}:" in " ".join(meta["errors"]["examples"]) for n in range(2, len(HOSTILE) + 2))


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_prepare_sft_process_with_a_worker_pool(tmp_path, on_error):
    """The real command, tokenizing in 2 worker processes: no traceback from any worker."""
    src = all_hostile(tmp_path)
    r = subprocess.run([sys.executable, str(TOOLS / "prepare_sft.py"), "--input", str(src), "--output_dir",
                        str(tmp_path / "ds"), "--no_progress", "--num_workers", "2", "--val_split", "0",
                        "--on-error", on_error], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    if on_error == "stop":
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"{src}:2: invalid JSON: nested deeper" in r.stderr
        assert not (tmp_path / "ds").exists()
    else:
        assert r.returncode == 0, r.stderr
        assert f"{len(HOSTILE)} bad records skipped" in r.stdout


# ------------------------------------------------------------------ mix and dedup
@pytest.mark.parametrize("tool, args", [
    ("mix_sft_jsonl.py", ["--inputs", "{src}", "--output", "{out}"]),
    ("deduplicate_episodes.py", ["--input", "{src}", "--output", "{out}"]),
])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_mix_and_dedup_stop_names_file_and_line(tmp_path, capsys, tool, args, kind):
    src, out = one_hostile(tmp_path, kind), tmp_path / "out.jsonl"
    code = cli(tool)([a.format(src=src, out=out) for a in args])
    assert_one_line_error(code, capsys.readouterr().err, f"{src}:2", HOSTILE[kind][1])
    assert not out.exists()


@pytest.mark.parametrize("tool, args", [
    ("mix_sft_jsonl.py", ["--inputs", "{src}", "--output", "{out}"]),
    ("deduplicate_episodes.py", ["--input", "{src}", "--output", "{out}", "--mode", "exact"]),
])
def test_mix_and_dedup_skip_count_every_hostile_record(tmp_path, capsys, tool, args):
    src, out = all_hostile(tmp_path), tmp_path / "out.jsonl"
    code = cli(tool)([a.format(src=src, out=out) for a in args] + ["--on-error", "skip"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"{len(HOSTILE)} bad records skipped" in stdout
    kept = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == (2 if tool == "mix_sft_jsonl.py" else 1)  # dedup: the two good ones are equal


# ------------------------------------------------------------------ the OOD loader
def test_ood_loader_skips_and_names_every_hostile_line(tmp_path):
    from mypt_lightning.gates.ood import read_episodes

    src = all_hostile(tmp_path)
    records, skipped = read_episodes(src)
    assert records == [GOOD, GOOD]
    assert len(skipped) == len(HOSTILE)
    for n, (line, reason) in enumerate(HOSTILE.values(), start=2):
        assert skipped[n - 2].startswith(f"{src}:{n}: invalid JSON: {reason}")


# ------------------------------------------------------------------ every other JSONL reader
def _read_jsonl(path):
    from mypt_lightning.generators.common import read_jsonl

    return read_jsonl(path)


def _question_bank(path):
    from mypt_lightning.generators.qa_bank import load_facts
    from mypt_lightning.workspace.store import Workspace

    return load_facts(Workspace(), path)


def _replay_inputs(path):
    from mypt_lightning.generators.pretrain_replay import discover_sources

    return discover_sources([path])


def _translation_strings(path):
    from mypt_lightning.data_prep.translation import iter_strings

    return list(iter_strings(path))


def _pipeline_token_count(path):
    from mypt_lightning.data_prep.phase_pipeline.actions import measure_tokens

    return measure_tokens(path)


@pytest.mark.parametrize("reader", [_read_jsonl, _question_bank, _replay_inputs, _translation_strings,
                                    _pipeline_token_count])
@pytest.mark.parametrize("kind", ["deep list", "huge int", "duplicate key", "invalid UTF-8"])
def test_other_readers_name_the_bad_line(tmp_path, reader, kind):
    src = write_lines(tmp_path / "in.jsonl", [b"", HOSTILE[kind][0]])  # line 1 blank: numbers still count it
    with pytest.raises(ValueError) as info:  # EpisodeError is a UserError and a ValueError
        reader(src)
    assert f"{src}:2: invalid JSON: {HOSTILE[kind][1]}" in str(info.value)


def test_deepl_resume_file_with_a_hostile_line_resumes_from_there(tmp_path):
    from mypt_lightning.data_prep.deepl import DeepLClient, translate_file

    strings = write_lines(tmp_path / "strings.jsonl", [b'{"key": "a", "text": "x"}'])
    out = write_lines(tmp_path / "de.jsonl", [b'{"key": "a", "text": "X"}', HOSTILE["deep list"][0]])
    stats = translate_file(DeepLClient("key:fx"), strings, out, "de")  # nothing left to translate: no request
    assert stats["already_done"] == 1 and stats["translated"] == 0
    assert out.read_bytes() == b'{"key": "a", "text": "X"}\n'  # the unreadable tail is dropped, as a torn line is


def test_workspace_manifest_with_hostile_json_is_a_load_error(tmp_path):
    from mypt_lightning.workspace.store import Workspace, WorkspaceLoadError

    (tmp_path / "index.json").write_bytes(b'{"documents": ' + b"[" * 10000)
    with pytest.raises(WorkspaceLoadError, match=r"index\.json: invalid JSON: nested deeper"):
        Workspace(tmp_path)


# ------------------------------------------------------------------ the agent's tool-call parser
HOSTILE_CALLS = {
    "deep list": ("[" * 10000, "nested deeper"),
    "deep arguments": ('{"name": "workspace.search", "query": ' + '{"a":' * 10000, "nested deeper"),
    "huge int": ('{"name": "workspace.search", "query": "x", "top_k": ' + "1" * 10000 + "}", "integer with 10000"),
    "duplicate key": ('{"name": "workspace.search", "query": "a", "query": "b"}', "duplicate key 'query'"),
    "NaN": ('{"name": "workspace.search", "query": NaN}', "NaN is not valid JSON"),
    "infinite": ('{"name": "workspace.search", "query": "x", "top_k": 1e999}', "out of range"),
    "lone surrogate": ('{"name": "workspace.search", "query": "\\ud800"}', "lone surrogate"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_CALLS))
def test_parse_assistant_output_turns_hostile_toolcalls_into_an_error(kind):
    from mypt_lightning.tokens.protocol import parse_assistant_output

    call, reason = HOSTILE_CALLS[kind]
    out = parse_assistant_output(f"<myPT_toolcall>{call}</myPT_toolcall></myPT_assistant>")
    assert out.toolcall is None
    assert out.toolcall_error.startswith("invalid toolcall JSON: ") and reason in out.toolcall_error


@pytest.fixture(scope="module")
def workspace():
    from mypt_lightning.workspace.store import Workspace

    return Workspace()


@pytest.mark.parametrize("kind", sorted(HOSTILE_CALLS))
def test_agent_recovers_from_a_hostile_toolcall(workspace, kind):
    """The real agent loop, the model played by TextPolicy (as in tests/test_agent.py)."""
    from mypt_lightning.inference.agent import AgentSession
    from mypt_lightning.inference.generation import TextPolicy

    call, reason = HOSTILE_CALLS[kind]
    policy = TextPolicy([f"<myPT_toolcall>{call}</myPT_toolcall>", "Sorry.</myPT_assistant><myPT_eot>"],
                        context_size=100_000)
    session = AgentSession(policy, workspace, "Use the tools.", max_new_tokens=50_000, context_size=100_000)
    turn = session.ask("Search something.")
    assert turn.completed and turn.answer == "Sorry."
    [step] = turn.steps
    assert step.error == "invalid_json" and step.result["error"] == "invalid toolcall JSON"
    assert reason in step.result["detail"]
    assert '"error": "invalid toolcall JSON"' in policy.calls[1]  # the model saw why


# ------------------------------------------------------------------ chat.py stdin
@pytest.mark.parametrize("env", [{}, {"PYTHONIOENCODING": "utf-8:strict"}])
def test_chat_survives_invalid_utf8_on_stdin(tiny_export, env):
    import os

    r = subprocess.run([sys.executable, str(TOOLS / "chat.py"), "--model", str(tiny_export), "--temperature", "0",
                        "--max_new_tokens", "4"], input=b"\xff\xfe hello\n", cwd=ROOT, capture_output=True,
                       timeout=300, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"Traceback" not in r.stderr
    assert r.stdout.count(b"mypt> ") == 1
