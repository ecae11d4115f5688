"""Workspace engine: corpus integrity, BM25 ranking (EN/DE, umlauts, compounds), tools, errors."""

import json
import re

import pytest

from mypt_lightning.workspace.store import TOOL_NAMES, ToolError, Workspace, WorkspaceLoadError, default_docs_dir
from mypt_lightning.workspace.analysis import Decompounder, detect_language, fold, split_sentences, stem


@pytest.fixture(scope="module")
def ws():
    return Workspace()


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj, ensure_ascii=False))


# ------------------------------------------------------------------ the bundled corpus
def test_corpus_has_40_original_docs_in_both_languages_and_five_domains(ws):
    assert len(ws.documents) >= 40
    langs = {d.language for d in ws.documents}
    assert langs == {"en", "de"}
    for lang in langs:
        assert sum(d.language == lang for d in ws.documents) >= 15
    assert {d.domain for d in ws.documents} >= {"policy", "setup", "product", "history", "science"}
    for d in ws.documents:
        n_words = len(d.text.split())
        assert 150 <= n_words <= 600, (d.doc_id, n_words)
        assert re.fullmatch(r"[a-z0-9-]+", d.doc_id)
    german = " ".join(d.text for d in ws.documents if d.language == "de")
    assert all(ch in german for ch in "äöüß")
    assert all(detect_language(d.text) == d.language for d in ws.documents)


def test_manifest_lists_every_file_and_ids_are_stable():
    index = json.loads((default_docs_dir() / "index.json").read_text(encoding="utf-8"))
    ids = [d["doc_id"] for d in index["documents"]]
    assert len(ids) == len(set(ids))
    files = sorted(p.name for p in default_docs_dir().glob("*.md"))
    assert sorted(d["file"] for d in index["documents"]) == files
    # A few ids other code and data refer to; renaming one breaks generated datasets.
    assert {"pol-travel-en", "pol-reise-de", "setup-vpn-de", "sci-bienen-de"} <= set(ids)


# ------------------------------------------------------------------ analysis
def test_folding_and_light_stemming():
    assert fold("Übernachtungskosten für Straße") == "uebernachtungskosten fuer strasse"
    assert fold("Café") == "cafe"
    assert stem("richtlinien") == stem("richtlinie")
    assert stem("policies") == stem("policy")
    assert stem("einstellungen") == stem("einstellung")


def test_decompounder_splits_on_lexicon_with_linking_elements():
    d = Decompounder(["urlaub", "antrag", "reise", "kosten", "richtlinie", "sicherheit", "schluessel"])
    assert d.split("urlaubsantrag") == ["urlaub", "antrag"]
    assert d.split("reisekostenrichtlinie") == ["reise", "kosten", "richtlinie"]
    assert d.split("sicherheitsschluessel") == ["sicherheit", "schluessel"]
    assert d.split("information") is None


def test_sentence_splitter_keeps_german_dates_and_abbreviations():
    text = "Am 7. Dezember 1835 fuhr der Zug. Der Beauftragte ist Dr. Helena Brandt. Ende."
    assert split_sentences(text) == ["Am 7. Dezember 1835 fuhr der Zug.", "Der Beauftragte ist Dr. Helena Brandt.", "Ende."]


# ------------------------------------------------------------------ ranking
@pytest.mark.parametrize("query, expected", [
    ("hotel costs per night", "pol-travel-en"),
    ("How many days of annual leave do I get?", "pol-leave-en"),
    ("WireGuard VPN port blocked", "setup-vpn-en"),
    ("Hanseatic League Lübeck", "hist-hanse-en"),
    ("chlorophyll green leaves", "sci-photosynthesis-en"),
    ("Wie hoch ist die Homeoffice-Pauschale?", "pol-homeoffice-de"),
    ("Berliner Mauer Schabowski", "hist-mauer-de"),
    ("Wirkungsgrad Solarmodule", "sci-photovoltaik-de"),
])
def test_bm25_ranks_the_right_document_first(ws, query, expected):
    assert ws.search(query)["documents"][0]["doc_id"] == expected


@pytest.mark.parametrize("query, expected", [
    ("Übernachtungskosten", "pol-reise-de"),
    ("Uebernachtungskosten", "pol-reise-de"),      # ue for ü
    ("UEBERNACHTUNGSKOSTEN", "pol-reise-de"),      # case
    ("Sicherheitsschluessel registrieren", "setup-mfa-de"),
    ("Schlussel", "setup-mfa-de"),                 # u for ü: trigram backoff
])
def test_umlaut_and_case_variants_find_the_same_document(ws, query, expected):
    assert ws.search(query)["documents"][0]["doc_id"] == expected


@pytest.mark.parametrize("query, expected", [
    ("Urlaubsantrag", "pol-urlaub-de"),            # compound of Urlaub + Antrag
    ("Homeofficepauschale", "pol-homeoffice-de"),  # doc writes Homeoffice-Pauschale
    ("Druckerwarteschlange", "setup-drucker-de"),  # doc writes Druckwarteschlange
    ("Reisekosten", "pol-reise-de"),               # part of Reisekostenrichtlinie
    ("Mauerfall", "hist-mauer-de"),
])
def test_german_compounds_match_their_parts(ws, query, expected):
    assert ws.search(query)["documents"][0]["doc_id"] == expected


def test_question_bank_queries_rank_their_document_first(ws):
    rows = [json.loads(line) for line in (default_docs_dir() / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    misses = [r["query"] for r in rows if ws.search(r["query"])["documents"][0]["doc_id"] != r["doc_id"]]
    assert not misses


def test_search_results_shape_order_and_determinism(ws):
    result = ws.search("battery charge", top_k=3)
    assert result == _json_roundtrip(result)
    docs = result["documents"]
    assert 1 <= len(docs) <= 3
    assert set(docs[0]) == {"doc_id", "title", "snippet", "score"}
    scores = [d["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert "20 and 80 percent" in Workspace().search("battery charge daily use")["documents"][0]["snippet"]
    assert ws.search("battery charge", top_k=3) == result
    assert ws.search("zzzqqqxxx")["documents"] == []


def test_search_is_stable_across_processes(tmp_path):
    import subprocess
    import sys

    code = "import json; from mypt_lightning.workspace.store import Workspace; print(json.dumps(Workspace().search('Datenschutz Panne melden')))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout for seed in (1, 2)}
    assert len(outs) == 1


# ------------------------------------------------------------------ other tools
def test_list_docs_and_filters(ws):
    everything = ws.list_docs()
    assert everything["count"] == len(ws.documents) == len(everything["documents"])
    policies = ws.list_docs(domain="policy", language="de")
    assert policies["count"] == 5 and all(d["language"] == "de" and d["domain"] == "policy" for d in policies["documents"])


def test_get_doc_by_id_title_and_folded_title(ws):
    by_id = ws.get_doc("pol-reise-de")
    assert by_id["title"] == "Reisekostenrichtlinie" and "Bahncard" in by_id["text"]
    assert ws.get_doc("Reisekostenrichtlinie") == by_id
    assert ws.get_doc("  datenschutzrichtlinie fuer beschaeftigte ")["doc_id"] == "pol-datenschutz-de"


def test_summarize_doc_and_text_is_extractive(ws):
    result = ws.summarize("sci-plates-en")
    assert result["doc_id"] == "sci-plates-en" and result["summary"]
    sentences = split_sentences(ws.get_doc("sci-plates-en")["text"])
    picked = [s for s in sentences if s in result["summary"]]
    assert len(picked) == 3
    assert [sentences.index(s) for s in picked] == sorted(sentences.index(s) for s in picked)
    short = ws.summarize(text="One sentence. Two sentences.", max_sentences=3)
    assert short == {"summary": "One sentence. Two sentences."}


# ------------------------------------------------------------------ the tool boundary
def test_call_dispatches_every_tool(ws):
    assert ws.call("workspace.search", {"query": "VPN"}) == ws.search("VPN")
    assert ws.call("workspace.search", {"query": "VPN", "top_k": 2}) == ws.search("VPN", 2)
    assert ws.call("workspace.list_docs") == ws.list_docs()
    assert ws.call("workspace.list_docs", {"domain": "science"}) == ws.list_docs(domain="science")
    assert ws.call("workspace.get_doc", {"doc_id": "hist-hanse-en"}) == ws.get_doc("hist-hanse-en")
    assert ws.call("workspace.get_doc", {"title": "The Hanseatic League"}) == ws.get_doc("hist-hanse-en")
    assert ws.call("workspace.summarize", {"doc_id": "hist-hanse-en"}) == ws.summarize("hist-hanse-en")
    assert ws.call("workspace.summarize", {"text": "A. B."}) == ws.summarize(text="A. B.")
    assert set(TOOL_NAMES) == {"workspace.search", "workspace.list_docs", "workspace.get_doc", "workspace.summarize"}


@pytest.mark.parametrize("name, args, error", [
    ("workspace.search", {"query": ""}, "empty query"),
    ("workspace.search", {"query": "   "}, "empty query"),
    ("workspace.search", {}, "bad arguments"),
    ("workspace.search", {"query": "x", "top_k": 0}, "top_k must be an integer from 1 to 20"),
    ("workspace.search", {"query": "x", "top_k": True}, "bad arguments"),
    ("workspace.search", {"query": 5}, "bad arguments"),
    ("workspace.search", {"query": "x", "limit": 3}, "bad arguments"),
    ("workspace.search", ["VPN"], "bad arguments"),
    ("workspace.get_doc", {"doc_id": "no-such-doc"}, "document not found"),
    ("workspace.get_doc", {}, "pass exactly one of 'doc_id' or 'title'"),
    ("workspace.get_doc", {"doc_id": "a", "title": "b"}, "pass exactly one of 'doc_id' or 'title'"),
    ("workspace.summarize", {"doc_id": "nope"}, "document not found"),
    ("workspace.summarize", {"text": ""}, "empty text"),
    ("workspace.summarize", {}, "pass exactly one of 'doc_id' or 'text'"),
    ("workspace.summarize", {"doc_id": "hist-hanse-en", "max_sentences": 0}, "max_sentences must be an integer from 1 to 10"),
    ("workspace.list_docs", {"domain": "policies"}, "unknown domain"),
    ("workspace.delete_doc", {"doc_id": "x"}, "unknown tool"),
    (None, {}, "unknown tool"),
])
def test_errors_come_back_as_json_objects(ws, name, args, error):
    result = ws.call(name, args)
    assert result["error"] == error
    assert result == _json_roundtrip(result)


def test_error_objects_carry_useful_details(ws):
    missing = ws.call("workspace.get_doc", {"doc_id": "travel-expense-policy"})
    assert missing["suggestions"][0] == "pol-travel-en" and missing["tool"] == "workspace.get_doc"
    assert "policy" in ws.call("workspace.list_docs", {"domain": "policies"})["available"]
    assert ws.call("workspace.search", {"query": "x", "limit": 3})["unexpected"] == ["limit"]
    assert ws.call("nope")["available"] == list(TOOL_NAMES)
    with pytest.raises(ToolError):
        ws.get_doc("no-such-doc")


def test_internal_failures_are_reported_not_raised(ws, monkeypatch):
    monkeypatch.setattr(Workspace, "search", lambda self, q, k=5: 1 / 0)
    result = ws.call("workspace.search", {"query": "x"})
    assert result["error"] == "internal error" and "ZeroDivisionError" in result["detail"]


# ------------------------------------------------------------------ other folders
def test_folder_without_manifest_and_malformed_folders(tmp_path):
    (tmp_path / "a.md").write_text("# Kaffeemaschine reinigen\n\nDie Kaffeemaschine wird jeden Freitag entkalkt.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("The coffee machine is cleaned every Friday.", encoding="utf-8")
    ws = Workspace(tmp_path)
    assert [d.doc_id for d in ws.documents] == ["a", "b"]
    assert ws.get_doc("a")["title"] == "Kaffeemaschine reinigen" and ws.get_doc("a")["language"] == "de"
    assert ws.search("Kaffeemaschinen")["documents"][0]["doc_id"] == "a"

    with pytest.raises(WorkspaceLoadError, match="does not exist"):
        Workspace(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.json").write_text(json.dumps({"documents": [{"doc_id": "x", "title": "X", "language": "en",
                                                               "domain": "d", "file": "x.md"}]}))
    with pytest.raises(WorkspaceLoadError, match="not found"):
        Workspace(bad)
    (bad / "x.md").write_text("Some text.")
    (bad / "y.md").write_text("Unlisted.")
    with pytest.raises(WorkspaceLoadError, match="not in the manifest"):
        Workspace(bad)


# ------------------------------------------------------------------ confinement (issue 10)
SECRET = "Geheimprojekt Zugangscode Tresor 4711 entsperrt"
LEGIT = "# Kaffeemaschine\n\nDie Kaffeemaschine wird jeden Freitag entkalkt. Der Filter kommt in den Schrank."


def _layout(tmp_path, manifest: bool, files: dict[str, str]):
    """A workspace folder ``ws`` with a legitimate document ``a.md`` (plus ``files``: manifest entry
    name -> doc id), a secret file outside it and a folder outside with a second secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(SECRET, encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.md").write_text(LEGIT, encoding="utf-8")
    if manifest:
        entries = [{"doc_id": "a", "title": "Kaffeemaschine", "language": "de", "domain": "office", "file": "a.md"}]
        entries += [{"doc_id": doc_id, "title": f"Doc {doc_id}", "language": "de", "domain": "office", "file": f}
                    for f, doc_id in files.items()]
        (ws / "index.json").write_text(json.dumps({"documents": entries}), encoding="utf-8")
    return ws, outside


def _every_tool_output(ws: Workspace) -> str:
    from mypt_lightning.workspace.store import result_strings

    queries = ("Geheimprojekt Zugangscode", "Tresor 4711", "Kaffee")
    results = [ws.call("workspace.search", {"query": q}) for q in queries]
    results.append(ws.call("workspace.list_docs", {}))
    for name in ("a", "leak", "secret", "pipe", "big", "Doc leak", "../outside/secret.md", "/etc/passwd"):
        results.append(ws.call("workspace.get_doc", {"doc_id": name}))
        results.append(ws.call("workspace.summarize", {"doc_id": name}))
    return " ".join(s for r in results for s in result_strings(r))


def _assert_confined(ws: Workspace, capsys, *names: str) -> None:
    served = _every_tool_output(ws)
    assert "Kaffeemaschine" in served  # the legitimate document is served
    assert "Geheimprojekt" not in served and "4711" not in served
    assert [d.doc_id for d in ws.documents] == ["a"]
    err = capsys.readouterr().err
    for name in names:
        assert "[mypt] workspace: skipped" in err and name in err, err
    assert len(ws.skipped) == len(names)


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_symlink_to_a_file_outside_is_skipped(tmp_path, capsys, manifest):
    ws, outside = _layout(tmp_path, manifest, {"leak.md": "leak"})
    (ws / "leak.md").symlink_to(outside / "secret.md")
    _assert_confined(Workspace(ws), capsys, "leak.md")


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_symlinked_directory_is_not_served(tmp_path, capsys, manifest):
    ws, outside = _layout(tmp_path, manifest, {"sub/secret.md": "leak"})
    (ws / "sub").symlink_to(outside, target_is_directory=True)
    if manifest:
        _assert_confined(Workspace(ws), capsys, "sub/secret.md")
    else:  # only the folder's own *.md/*.txt are read; a link to a folder named like a document is refused
        (ws / "linked.md").symlink_to(outside, target_is_directory=True)
        _assert_confined(Workspace(ws), capsys, "linked.md")


# a missing file outside is refused too, not "not found": the manifest cannot probe what exists outside
@pytest.mark.parametrize("entry", ["../outside/secret.md", "ABSOLUTE", "sub/../../outside/secret.md",
                                   "../outside/missing.md"])
def test_manifest_entry_leading_out_is_skipped(tmp_path, capsys, entry):
    entry = str(tmp_path / "outside" / "secret.md") if entry == "ABSOLUTE" else entry
    ws, _ = _layout(tmp_path, True, {entry: "leak"})
    (ws / "sub").mkdir()
    _assert_confined(Workspace(ws), capsys, entry)


def test_symlink_inside_the_folder_is_served(tmp_path, capsys):
    ws, _ = _layout(tmp_path, True, {"b.md": "b"})
    (ws / "real").mkdir()
    (ws / "real" / "b.md").write_text("Der Drucker steht im zweiten Stock neben der Teeküche.", encoding="utf-8")
    (ws / "b.md").symlink_to(ws / "real" / "b.md")
    loaded = Workspace(ws)
    assert [d.doc_id for d in loaded.documents] == ["a", "b"] and loaded.skipped == []
    assert "Drucker" in loaded.get_doc("b")["text"]


def _load_within(seconds: float, ws_dir):
    """Workspace(ws_dir), failing (not hanging) if it blocks: reading a FIFO would wait forever."""
    import threading

    box: dict = {}

    def load():
        try:
            box["ws"] = Workspace(ws_dir)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            box["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "Workspace() blocked on a FIFO"
    if "error" in box:
        raise box["error"]
    return box["ws"]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_fifo_is_skipped_without_blocking(tmp_path, capsys, manifest):
    import os

    ws, _ = _layout(tmp_path, manifest, {"pipe.md": "pipe"})
    os.mkfifo(ws / "pipe.md")
    loaded = _load_within(30, ws)
    _assert_confined(loaded, capsys, "pipe.md")
    assert "not a regular file" in loaded.skipped[0]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_huge_file_is_skipped(tmp_path, capsys, manifest):
    from mypt_lightning.workspace.store import MAX_DOC_BYTES

    ws, _ = _layout(tmp_path, manifest, {"big.md": "big"})
    with open(ws / "big.md", "wb") as handle:  # sparse: the size is refused before anything is read
        handle.truncate(MAX_DOC_BYTES + 1)
    loaded = Workspace(ws)
    _assert_confined(loaded, capsys, "big.md")
    assert "larger than the 10 MB limit" in loaded.skipped[0]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_non_utf8_document_is_named(tmp_path, manifest):
    ws, _ = _layout(tmp_path, manifest, {"latin.md": "latin"})
    (ws / "latin.md").write_bytes("Über die Straße".encode("latin-1"))
    with pytest.raises(WorkspaceLoadError, match=r"latin\.md: not UTF-8 text \(byte 0xdc at byte offset 0\)"):
        Workspace(ws)


def test_manifest_itself_must_be_inside_and_a_regular_file(tmp_path):
    import os

    ws, outside = _layout(tmp_path, False, {})
    (outside / "index.json").write_text(json.dumps({"documents": []}), encoding="utf-8")
    (ws / "index.json").symlink_to(outside / "index.json")
    with pytest.raises(WorkspaceLoadError, match=r"index\.json: resolves to .*outside the workspace folder"):
        Workspace(ws)
    (ws / "index.json").unlink()
    os.mkfifo(ws / "index.json")
    with pytest.raises(WorkspaceLoadError, match=r"index\.json: is not a regular file"):
        _load_within(30, ws)
    (ws / "index.json").unlink()
    for bad in ('{"documents": 5}', '{"documents": ["a.md"]}', "[1]"):
        (ws / "index.json").write_text(bad, encoding="utf-8")
        with pytest.raises(WorkspaceLoadError, match=r"index\.json"):
            Workspace(ws)


def test_the_bundled_workspace_skips_nothing():
    assert Workspace().skipped == []


def test_no_tool_writes_anything(tmp_path):
    ws_dir, _ = _layout(tmp_path, False, {})
    (ws_dir / "b.txt").write_text("The printer is on the second floor next to the kitchen.", encoding="utf-8")

    def snapshot():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    before = snapshot()
    _every_tool_output(Workspace(ws_dir))
    assert snapshot() == before
