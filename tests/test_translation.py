"""Translation helpers and the DeepL client, against a local HTTP server on 127.0.0.1 that
answers in DeepL's format (no other network)."""

from __future__ import annotations

import json
import runpy
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from helpers import write_jsonl
from mypt_lightning.data_prep.deepl import DeepLClient, DeepLError, translate_file
from mypt_lightning.data_prep.translation import extract, merge_bilingual, recombine
from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import validate_episode

TOOLS = Path(__file__).resolve().parents[1] / "tools"
KEY = "test-key:fx"

EPISODES = [
    {"system": "You are MyPT.", "messages": [
        {"role": "user", "content": "Find the ML doc.", "context": "Docs: ml-101"},
        {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "ML doc", "top_k": 3},
         "think": "Search first."},
        {"role": "toolresult", "name": "workspace.search", "content": "ml-101: Intro"},
        {"role": "assistant", "content": "It is ml-101.", "cite": "ml-101"}], "language": "en"},
    {"_replay": True, "text": "Some plain text.", "language": "en"},
]


class FakeDeepL:
    """A DeepL v2 /translate endpoint: checks the auth header and answers 'DE(text)'."""

    def __init__(self, fail_first: int = 0, status: int = 429):
        self.requests: list[dict] = []
        self.fail_first, self.status = fail_first, status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                       "type": self.headers.get("Content-Type"), "body": body})
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(outer.status)
                    self.end_headers()
                    self.wfile.write(b'{"message": "Too many requests"}')
                    return
                if self.headers.get("Authorization") != f"DeepL-Auth-Key {KEY}":
                    self.send_response(403)
                    self.end_headers()
                    return
                answer = {"translations": [{"detected_source_language": "EN", "text": f"DE({t})"}
                                           for t in body["text"]]}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2/translate"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def read(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_extract_keys(tmp_path):
    src = write_jsonl(tmp_path / "en.jsonl", EPISODES)
    stats = extract(src, tmp_path / "strings.jsonl")
    keys = [s["key"] for s in read(tmp_path / "strings.jsonl")]
    assert keys == ["0:system", "0:messages.0.content", "0:messages.0.context", "0:messages.1.think",
                    "0:messages.3.content", "1:text"]
    assert stats == {"records": 2, "strings": 6, "skipped": 0}
    extract(src, tmp_path / "all.jsonl", tool_arguments=True, tool_results=True)
    keys = [s["key"] for s in read(tmp_path / "all.jsonl")]
    assert "0:messages.1.arguments.query" in keys and "0:messages.2.content" in keys
    assert "0:messages.1.arguments.top_k" not in keys  # only strings


def test_deepl_round_trip_retry_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPL_API_KEY", KEY)
    src = write_jsonl(tmp_path / "en.jsonl", EPISODES)
    extract(src, tmp_path / "strings.jsonl")
    with FakeDeepL(fail_first=1) as server:
        client = DeepLClient.from_env(server.url, sleep=lambda s: None)
        stats = translate_file(client, tmp_path / "strings.jsonl", tmp_path / "de_strings.jsonl", "de",
                               source_lang="en", batch_size=4)
        assert stats["translated"] == 6 and stats["already_done"] == 0
        first = server.requests[1]  # the 429 was retried
        assert first["auth"] == f"DeepL-Auth-Key {KEY}" and first["type"] == "application/json"
        assert first["body"] == {"text": ["You are MyPT.", "Find the ML doc.", "Docs: ml-101", "Search first."],
                                 "target_lang": "DE", "source_lang": "EN"}
        assert len(server.requests) == 3
        # resume: a killed run left 2 full lines and half a line; only the rest is requested
        lines = (tmp_path / "de_strings.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / "de_strings.jsonl").write_text("".join(lines[:2]) + lines[2][:10])
        stats = translate_file(client, tmp_path / "strings.jsonl", tmp_path / "de_strings.jsonl", "DE")
        assert stats == {"already_done": 2, "translated": 4, "characters": client.characters}
        assert server.requests[-1]["body"]["text"] == ["Docs: ml-101", "Search first.", "It is ml-101.",
                                                        "Some plain text."]
    translated = read(tmp_path / "de_strings.jsonl")
    assert [t["key"] for t in translated] == [s["key"] for s in read(tmp_path / "strings.jsonl")]
    recombine(src, tmp_path / "de_strings.jsonl", tmp_path / "de.jsonl", "de")
    de = read(tmp_path / "de.jsonl")
    for record in de:
        validate_episode(record)
    assert de[0]["system"] == "DE(You are MyPT.)" and de[0]["messages"][0]["context"] == "DE(Docs: ml-101)"
    assert de[0]["messages"][1]["arguments"] == {"query": "ML doc", "top_k": 3}  # not translated by default
    assert de[0]["messages"][3]["cite"] == "ml-101" and de[0]["messages"][2]["content"] == "ml-101: Intro"
    assert de[0]["language"] == "de" and de[0]["_meta"] == {"translated_from": "en", "translation_of": "en.jsonl:0"}
    assert de[1]["text"] == "DE(Some plain text.)"


def test_deepl_errors(tmp_path, monkeypatch):
    for name in ("DEEPL_API_KEY", "DEEPL_AUTH_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DeepLError, match="DEEPL_API_KEY or DEEPL_AUTH_KEY"):
        DeepLClient.from_env()
    assert DeepLClient("abc:fx").api_url.startswith("https://api-free.deepl.com")
    assert DeepLClient("abc").api_url.startswith("https://api.deepl.com")
    with FakeDeepL() as server:
        with pytest.raises(DeepLError, match="rejected the API key"):
            DeepLClient("wrong", server.url).translate(["x"], "DE")
    with FakeDeepL(fail_first=1, status=456) as server:
        with pytest.raises(DeepLError, match="quota exceeded"):
            DeepLClient(KEY, server.url).translate(["x"], "DE")
    with FakeDeepL(fail_first=10, status=503) as server:
        with pytest.raises(DeepLError, match="HTTP 503"):
            DeepLClient(KEY, server.url, max_retries=2, sleep=lambda s: None).translate(["x"], "DE")
        assert len(server.requests) == 3


def test_cli_without_key_is_one_clear_line(tmp_path, monkeypatch, capsys):
    for name in ("DEEPL_API_KEY", "DEEPL_AUTH_KEY"):
        monkeypatch.delenv(name, raising=False)
    src = write_jsonl(tmp_path / "s.jsonl", [{"key": "0:text", "text": "hi"}])
    main = runpy.run_path(str(TOOLS / "translate_deepl.py"))["main"]
    assert main(["--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DEEPL_API_KEY" in err
    monkeypatch.setenv("DEEPL_AUTH_KEY", KEY)
    with FakeDeepL() as server:
        assert main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--api_url", server.url]) == 0
    assert read(tmp_path / "o.jsonl") == [{"key": "0:text", "text": "DE(hi)"}]


def test_recombine_missing_translation_stops_or_skips(tmp_path):
    src = write_jsonl(tmp_path / "en.jsonl", EPISODES)
    write_jsonl(tmp_path / "t.jsonl", [{"key": "1:text", "text": "Etwas Text."}])
    with pytest.raises(UserError, match=r"en.jsonl:1: system: no translation for key 0:system"):
        recombine(src, tmp_path / "t.jsonl", tmp_path / "de.jsonl", "de")
    assert not (tmp_path / "de.jsonl").exists()
    stats = recombine(src, tmp_path / "t.jsonl", tmp_path / "de.jsonl", "de", on_error="skip")
    assert stats == {"written": 1, "skipped": 1}


def test_merge_bilingual_pairs_share_an_id(tmp_path):
    en = write_jsonl(tmp_path / "en.jsonl", [EPISODES[1], {**EPISODES[1], "text": "Other text."}])
    de = write_jsonl(tmp_path / "de.jsonl", [{"_replay": True, "text": "Anderer Text.", "language": "de",
                                        "_meta": {"translation_of": "en.jsonl:1"}}])
    stats = merge_bilingual(en, de, tmp_path / "bi.jsonl")
    out = read(tmp_path / "bi.jsonl")
    assert stats == {"written": 3, "pairs": 1, "unpaired": 1, "skipped": 0}
    assert [r["text"] for r in out] == ["Some plain text.", "Other text.", "Anderer Text."]
    assert out[1]["_meta"]["pair_id"] == out[2]["_meta"]["pair_id"] and "pair_id" not in out[0].get("_meta", {})
    write_jsonl(tmp_path / "de2.jsonl", [{**EPISODES[1], "text": "A"}, {**EPISODES[1], "text": "B"}])
    merge_bilingual(en, tmp_path / "de2.jsonl", tmp_path / "cat.jsonl", mode="concat")
    assert [r["text"] for r in read(tmp_path / "cat.jsonl")] == ["Some plain text.", "Other text.", "A", "B"]
    main = runpy.run_path(str(TOOLS / "merge_bilingual_episodes.py"))["main"]
    assert main(["--en", str(en), "--de", str(de), "--output", str(tmp_path / "cli.jsonl")]) == 0
