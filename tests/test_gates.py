"""Gates: verdicts on crafted outputs (scripted policies that play a good or a bad model),
report format, regression + OOD handling, the CLI's exit codes, the training callback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_jsonl
from mypt_lightning.gates import GATES, Case, CaseResult, Criterion, Gate, evaluate, parse_phase
from mypt_lightning.gates import cli, ood, phase1, runner
from mypt_lightning.gates.language import language_of
from mypt_lightning.inference.generation import TextPolicy
from mypt_lightning.tokens.tokenizer import get_tokenizer
from mypt_lightning.workspace.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
CLOSE = "</myPT_assistant><myPT_eot>"


@pytest.fixture(scope="module")
def workspace():
    return Workspace()


def last_user(prompt: str) -> str:
    """The last user message of a prompt text (without its context)."""
    block = prompt.rsplit("<myPT_user>", 1)[1].split("</myPT_user>", 1)[0]
    return block.split("</myPT_user_context>", 1)[-1]


def by_user(gate, workspace=None) -> dict[str, Case]:
    return {c.messages[-1]["content"]: c for c in gate.cases(workspace)}


# ----------------------------------------------------------------------------- phase 1


def p1_policy(reply_en: str, reply_de: str) -> TextPolicy:
    cases = by_user(GATES[1])
    return TextPolicy(lambda prompt: reply_de if cases[last_user(prompt)].language == "de" else reply_en)


def test_phase1_passes_short_closed_answers_in_both_languages():
    result = GATES[1].run(p1_policy("Yes." + CLOSE, "Ja." + CLOSE))
    assert result.passed and result.metrics["pass_rate"] == 1.0
    assert len(result.cases) == 50 and {c.language for c in result.cases} == {"en", "de"}


def test_phase1_needs_answers_recognisably_in_each_language():
    """A model that answers everything with a neutral word ("Ne.", "4") closes perfectly but
    does not answer in EN and DE: the gate fails on answers_in_en / answers_in_de."""
    result = GATES[1].run(p1_policy("4" + CLOSE, "4" + CLOSE))
    assert result.metrics["pass_rate"] == 1.0 and result.metrics["answers_in_de"] == 0.0 and not result.passed
    assert sum("recognised_language" in c.details for c in result.cases) == 16
    half = GATES[1].run(p1_policy("Yes." + CLOSE, "4" + CLOSE))  # English fine, German neutral
    assert half.metrics["answers_in_en"] == 1.0 and not half.passed
    assert [c["metric"] for c in half.criteria if not c["ok"]] == ["answers_in_de"]


@pytest.mark.parametrize("en, de, failed_check", [
    ("Yes." + CLOSE, "Yes." + CLOSE, "language"),           # German prompts answered in English
    ("Yes.</myPT_assistant>more text", "Ja.</myPT_assistant>more", "no_runaway"),
    ("word " * 25 + CLOSE, "Wort " * 25 + CLOSE, "closed_in_20"),  # closes, but too late
    (CLOSE, CLOSE, "answered"),
    ("Yes.<myPT_eot>", "Ja.<myPT_eot>", "closed_in_20"),     # no </myPT_assistant>
])
def test_phase1_failures(en, de, failed_check):
    result = GATES[1].run(p1_policy(en, de))
    assert not result.passed
    bad = [c for c in result.cases if not c.passed]
    assert bad and all(not c.checks[failed_check] for c in bad)
    assert failed_check in bad[0].reason


def test_phase1_close_within_20_is_counted_in_tokens():
    case = next(c for c in GATES[1].cases() if not c.expect["language_marked"])
    from mypt_lightning.inference.generation import encode_with_tags

    tok = get_tokenizer()
    ids = encode_with_tags("a" + " b" * 17 + CLOSE)  # 18 text tokens + 2 tags = 20
    assert len(ids) == 20 and phase1.judge(case, ids, "stop_token", "", tok).passed
    ids = encode_with_tags("a" + " b" * 18 + CLOSE)
    assert not phase1.judge(case, ids, "stop_token", "", tok).checks["closed_in_20"]


# ----------------------------------------------------------------------------- phase 2


def test_phase2_cases_are_unseen_payloads_and_exact_match_counts():
    from mypt_lightning.generators.operators import payload_split

    cases = GATES[2].cases()
    assert len(cases) == 60 and all(payload_split(c.expect["payload"]) == "val" for c in cases)
    answers = {c.messages[0]["content"]: c.expect["answer"] for c in cases}
    good = GATES[2].run(TextPolicy(lambda p: answers[last_user(p)] + CLOSE))
    assert good.passed and good.metrics["exact_match"] == 1.0
    # 80% exactly is not "> 80%": answer 48 of 60 right
    wrong = set(list(answers)[:12])
    edge = GATES[2].run(TextPolicy(lambda p: (answers[last_user(p)] + "!" if last_user(p) in wrong
                                              else answers[last_user(p)]) + CLOSE))
    assert edge.metrics["exact_match"] == pytest.approx(0.8) and not edge.passed
    echo = GATES[2].run(TextPolicy(lambda p: last_user(p) + CLOSE))
    assert not echo.passed and "expected" in echo.cases[0].reason
    # the report shows what the model answered next to what was expected (not the expectation twice)
    first = echo.cases[0]
    assert first.details["answer"] == cases[0].messages[0]["content"]
    assert first.details["expected"] == cases[0].expect["answer"] != first.details["answer"]


# ----------------------------------------------------------------------------- phase 3


def p3_reply(cases, broken: str = ""):
    def reply(prompt: str) -> str:
        case = cases[last_user(prompt)]
        if case.category == "echo" and broken != "echo":
            return f"Sure: {case.expect['contains']}{CLOSE}"
        if case.category == "echo":
            return "Sure." + CLOSE
        if case.category == "anti_echo" and broken == "anti_echo":
            return case.expect["not_contains"] + CLOSE
        if case.category == "cite":
            cite = "" if broken == "cite" else f"<myPT_cite>{case.expect['doc_id']}</myPT_cite>"
            text = "Das steht im Dokument." if case.language == "de" else "It is in the document."
            return text + cite + CLOSE
        if broken == "language":
            return "This is the answer in English." + CLOSE
        return ("Das ist die Antwort." if case.language == "de" else "This is the answer.") + CLOSE

    return TextPolicy(reply)


def test_phase3_verdicts(workspace):
    cases = by_user(GATES[3], workspace)
    good = GATES[3].run(p3_reply(cases), workspace=workspace)
    assert good.passed, good.summary()
    assert {c.category for c in good.cases} == {"format", "echo", "anti_echo", "cite"}
    for broken, metric in (("echo", "pass_rate_echo"), ("anti_echo", "pass_rate_anti_echo"),
                           ("cite", "pass_rate_cite"), ("language", "language")):
        result = GATES[3].run(p3_reply(cases, broken), workspace=workspace)
        assert not result.passed and result.metrics[metric] < 0.8, broken
        assert any(metric in text and "FAILED" in text for text in result.failed_criteria)


# ----------------------------------------------------------------------------- phase 4


def p4_reply(leak: bool = False):
    def reply(prompt: str) -> str:
        context = prompt.split("<myPT_user_context>", 1)[1].split("</myPT_user_context>", 1)[0]
        sentence = context.split("\n", 1)[1].split(". ")[len(re.findall("<myPT_user>", prompt)) - 1]
        return sentence + "." + ("<myPT_user>more" if leak else "") + CLOSE

    return TextPolicy(reply)


def test_phase4_multiturn(workspace):
    good = GATES[4].run(p4_reply(), workspace=workspace)
    assert good.passed, good.summary()
    assert all(len(c.details["turns"]) == 3 for c in good.cases)
    assert good.cases[0].prompt.count("<myPT_eot>") == 3  # the real history went back in
    leaky = GATES[4].run(p4_reply(leak=True), workspace=workspace)
    assert not leaky.passed and leaky.metrics["clean_boundaries"] == 0.0
    off_topic = GATES[4].run(TextPolicy("Bananas are yellow fruit from tropical plants." + CLOSE), workspace=workspace)
    assert off_topic.metrics["topic_kept"] < 0.5 and not off_topic.passed


# ----------------------------------------------------------------------------- phases 5 and 6


def _last_result(prompt: str) -> dict | None:
    if "<myPT_toolresult>" not in prompt:
        return None
    return json.loads(prompt.rsplit("<myPT_toolresult>", 1)[1].split("</myPT_toolresult>", 1)[0])


def _call(name: str, think: str = "", **args) -> str:
    think = f"<myPT_think>{think}</myPT_think>" if think else ""
    return f"{think}<myPT_toolcall>{json.dumps({'name': name, **args})}</myPT_toolcall>"


def p5_policy(cases, always_tool: bool = False, bad_json: bool = False) -> TextPolicy:
    def reply(prompt: str) -> str:
        case = cases[last_user(prompt)]
        result = _last_result(prompt)
        if result is None:
            tool = case.expect.get("tool")
            if tool is None and not always_tool:
                return "Fifty-six." + CLOSE
            if bad_json:
                return '<myPT_toolcall>{"name": "workspace.search", query}</myPT_toolcall>'
            args = {"workspace.search": {"query": last_user(prompt)}, "workspace.list_docs": {}}.get(
                tool or "workspace.search", {"doc_id": case.expect.get("doc_id")})
            return _call(tool or "workspace.search", **args)
        doc = (result.get("documents") or [result])[0]
        return f"Here is what I found.<myPT_cite>{doc.get('doc_id')}</myPT_cite>{CLOSE}"

    return TextPolicy(reply)


def test_phase5_verdicts(workspace):
    cases = by_user(GATES[5], workspace)
    good = GATES[5].run(p5_policy(cases), workspace=workspace)
    assert good.passed, good.summary()
    assert good.metrics["tool_correct_valid_json"] == 1.0 and good.metrics["no_tool_accuracy"] == 1.0
    trigger_happy = GATES[5].run(p5_policy(cases, always_tool=True), workspace=workspace)
    assert not trigger_happy.passed and trigger_happy.metrics["no_tool_accuracy"] == 0.0
    broken = GATES[5].run(p5_policy(cases, bad_json=True), workspace=workspace)
    assert broken.metrics["tool_correct_valid_json"] == 0.0
    assert "invalid JSON" in next(c for c in broken.cases if c.category == "search").reason


def p6_policy(cases, think: bool = True, loop: bool = False) -> TextPolicy:
    def reply(prompt: str) -> str:
        case = cases[last_user(prompt)]
        n_results = prompt.count("<myPT_toolresult>")
        result = _last_result(prompt)
        t = "Next step." if think else ""
        if loop:
            return _call("workspace.search", t, query="same query")
        if case.category == "lookup":
            if n_results == 0:
                return _call("workspace.search", t, query=last_user(prompt))
            if n_results == 1:
                return _call("workspace.get_doc", t, doc_id=result["documents"][0]["doc_id"])
            return f"{result['text'][:200]}<myPT_cite>{result['doc_id']}</myPT_cite>{CLOSE}"
        if n_results == 0:
            return _call("workspace.list_docs", t)
        if n_results == 1:
            title = last_user(prompt).split('"')[1] if '"' in last_user(prompt) else \
                last_user(prompt).split("„")[1].split("“")[0]
            doc = next(d for d in result["documents"] if d["title"] == title)
            return _call("workspace.summarize", t, doc_id=doc["doc_id"])
        return f"{result['summary']}<myPT_cite>{result['doc_id']}</myPT_cite>{CLOSE}"

    return TextPolicy(reply)


def test_phase6_verdicts(workspace):
    cases = by_user(GATES[6], workspace)
    good = GATES[6].run(p6_policy(cases), workspace=workspace)
    assert good.passed, good.summary()
    assert all(len(c.details["steps"]) == 2 for c in good.cases)
    no_think = GATES[6].run(p6_policy(cases, think=False), workspace=workspace)
    assert not no_think.passed and no_think.metrics["think_before_tools"] == 0.0
    looping = GATES[6].run(p6_policy(cases, loop=True), workspace=workspace)
    assert looping.metrics["completion"] == 0.0
    assert all(c.details["stop_reason"] == "loop" for c in looping.cases)


# ----------------------------------------------------------------------------- runner, report, OOD


class FakeGate(Gate):
    def __init__(self, phase, passes):
        self.phase, self.name, self.passes = phase, f"fake{phase}", passes
        self.criteria = (Criterion("pass_rate", ">=", 0.5),)

    def cases(self, workspace=None):
        return [Case(f"f{self.phase}", "x", "en", [{"role": "user", "content": "hi"}])]

    def run_case(self, case, ctx):
        return CaseResult(case.id, "x", "en", "prompt", "output", self.passes, {"ok": self.passes})


def write_ood(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    episodes = [
        {"system": "S", "language": "en", "messages": [
            {"role": "user", "content": "Tell me about the hotel allowance.", "context": "[pol-travel-en] Travel"},
            {"role": "assistant", "content": "150 euros.", "cite": "pol-travel-en"}]},
        {"language": "de", "messages": [
            {"role": "user", "content": "Hallo"}, {"role": "assistant", "content": "Hallo!"},
            {"role": "user", "content": "Wie geht es?"}, {"role": "assistant", "content": "Gut."}]},
    ]
    path = directory / "phase3_chat_ood.jsonl"
    write_jsonl(path, [*episodes, "{not json"])
    (directory / "phase5_toolcall_ood.jsonl").write_text("")  # above phase 3: not picked up
    (directory / "notes.jsonl").write_text("")
    return path


def test_regression_runs_earlier_gates_and_reports_ood_as_warnings(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "GATES", {1: FakeGate(1, True), 2: FakeGate(2, True), 3: FakeGate(3, True)})
    write_ood(tmp_path / "ood")
    policy = TextPolicy(lambda p: "Die Antwort ist gut." + CLOSE)  # OOD case 1 fails: no cite, wrong language
    report = evaluate(policy, 3, regression=True, ood_dir=tmp_path / "ood")
    assert [g.phase for g in report.gates] == [1, 2, 3] and report.passed
    assert [Path(o.file).name for o in report.ood] == ["phase3_chat_ood.jsonl"]
    ood_result = report.ood[0]
    assert [c.passed for c in ood_result.cases] == [False, True]
    assert "turn1_cite" in ood_result.cases[0].reason and "turn1_language" in ood_result.cases[0].reason
    assert any(w.startswith("OOD phase3_chat_ood.jsonl: pass rate 0.50 (1/2)") for w in report.warnings)
    assert any("phase3_chat_ood.jsonl:3" in w for w in report.warnings)  # the bad line, named
    # an earlier gate failing fails the regression run
    monkeypatch.setattr(runner, "GATES", {1: FakeGate(1, False), 2: FakeGate(2, True), 3: FakeGate(3, True)})
    assert not evaluate(policy, 3, regression=True, ood_dir=tmp_path / "none").passed
    assert evaluate(policy, 3).passed  # without --regression only phase 3's gate counts


def test_report_format(tmp_path):
    report = evaluate(p1_policy("Yes." + CLOSE, "Ja." + CLOSE), 1, model_name="m")
    path = report.write(tmp_path / "sub" / "report.json")
    data = json.loads(path.read_text())
    assert data["passed"] is True and data["phase"] == 1 and data["model"] == "m"
    [gate] = data["gates"]
    assert gate["num_cases"] == len(gate["cases"]) == 50
    case = gate["cases"][0]
    assert {"id", "prompt", "output", "verdict", "checks", "reason"} <= set(case)
    assert case["prompt"].startswith("<myPT_system>") and case["prompt"].endswith("<myPT_assistant>")
    assert case["output"] == "Yes." + CLOSE and case["verdict"] == "pass"
    assert {c["metric"] for c in gate["criteria"]} == {"pass_rate", "pass_rate_en", "pass_rate_de", "answers_in_en",
                                                       "answers_in_de"}


@pytest.mark.parametrize("value, expected", [(1, 1), ("3", 3), ("phase5", 5), ("phase6_agentic_rag", 6)])
def test_parse_phase(value, expected):
    assert parse_phase(value) == expected


@pytest.mark.parametrize("value", ["1b", "7", "phase1b_context_ext", "x"])
def test_parse_phase_refuses(value):
    with pytest.raises(ValueError, match="no gate"):
        parse_phase(value)


def test_language_heuristic():
    assert language_of("Ja.") == "de" and language_of("Yes, it is.") == "en"
    assert language_of("Das Wetter ist schön.") == "de" and language_of("Berlin") is None


# ----------------------------------------------------------------------------- CLI


def test_cli_exit_codes_in_process(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: p1_policy("Yes." + CLOSE, "Ja." + CLOSE))
    assert cli.main(["--model", "m", "--phase", "1", "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: p1_policy("Yes." + CLOSE, "Yes." + CLOSE))
    assert cli.main(["--model", "m", "--phase", "phase1", "-v"]) == 1
    out = capsys.readouterr().out
    assert "FAIL format_lock p1-de-00" in out and "phase 1: FAILED" in out
    assert cli.main(["--model", "m", "--phase", "1b"]) == 2


def run_tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_on_an_untrained_model_fails_with_a_full_report(tiny_export, tmp_path):
    r = run_tool("eval_gates.py", "--model", tiny_export, "--phase", 1, "--max_cases", 4, "--report",
                 tmp_path / "r.json", "--device", "cpu")
    assert r.returncode == 1, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and len(data["gates"][0]["cases"]) == 4
    assert all(c["verdict"] == "fail" and c["reason"] for c in data["gates"][0]["cases"])
    r = run_tool("eval_operator.py", "--model", tmp_path / "missing", "--max_cases", 2)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- callback


def test_gate_callback_logs_metrics_and_samples(tmp_path):
    from hydra import compose, initialize_config_dir

    import mypt_lightning.config  # noqa: F401
    from mypt_lightning.training.train import train
    from helpers import write_packed_dataset
    from helpers import tiny_overrides

    data = write_packed_dataset(tmp_path / "data", {"train": 8, "val": 2})
    out = tmp_path / "run"
    overrides = tiny_overrides(data, out, logger="csv", callbacks="gate",
                               **{"train.max_steps": 2, "train.eval_every_steps": 1,
                                  "callbacks.gate.max_cases": 4, "callbacks.gate.every_n_validations": 2,
                                  "model.block_size": 64, "data.num_workers": 0})
    overrides = [o for o in overrides if not o.startswith(("callbacks.progress_bar", "callbacks.model_summary"))]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides + ["callbacks.progress_bar=null"])
    assert cfg.callbacks.gate.phase == "1"
    metrics = train(cfg)
    assert "gate/phase1/pass_rate" in metrics and metrics["gate/phase1/passed"] == 0.0
    assert sorted(p.name for p in (out / "gates").iterdir()) == ["phase1_samples.csv", "phase1_step000001.json"]
    assert "gate/phase1/pass_rate" in (out / "csv" / "metrics.csv").read_text()
    rows = (out / "gates" / "phase1_samples.csv").read_text().splitlines()
    assert rows[0].startswith("step,id,category") and len(rows) >= 5


def test_gate_callback_uses_the_wandb_table_when_wandb_is_on(tmp_path):
    from mypt_lightning.training.callbacks import TABLE_COLUMNS, GateCallback

    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    class WandbLogger(LightningWandbLogger):  # the callback finds W&B by type; no wandb run is started
        def __init__(self):
            self.tables = []

        def log_table(self, key, columns, data, step):
            self.tables.append((key, columns, data, step))

    logger = WandbLogger()
    trainer = type("T", (), {"loggers": [logger], "default_root_dir": str(tmp_path)})()
    result = GATES[1].run(p1_policy("Yes." + CLOSE, "Yes." + CLOSE), max_cases=6)
    GateCallback(1, table_rows=4)._log_samples(trainer, result, step=7)
    [(key, columns, data, step)] = logger.tables
    assert (key, columns, step) == ("gate/phase1/samples", TABLE_COLUMNS, 7)
    assert len(data) == 4 and data[0][4] == "fail"  # failures first
    assert not (tmp_path / "gates").exists()


def reference_replies(records: list[dict]) -> list[str]:
    """Every reference assistant block of ``records``, in order, as the model would write it."""
    from mypt_lightning.tokens.protocol import toolcall_json

    out = []
    for r in records:
        for m in r["messages"]:
            think = f"<myPT_think>{m['think']}</myPT_think>" if m.get("think") else ""
            if m["role"] == "assistant_toolcall":
                out.append(f"{think}<myPT_toolcall>{toolcall_json(m['name'], m['arguments'])}</myPT_toolcall>")
            elif m["role"] == "assistant":
                cite = f"<myPT_cite>{m['cite']}</myPT_cite>" if m.get("cite") else ""
                out.append(f"{think}{m['content']}{cite}{CLOSE}")
    return out


@pytest.mark.parametrize("phase", [3, 4, 5, 6])
def test_ood_references_pass_their_own_checks(phase, workspace):
    """Replaying an OOD file's own reference answers must pass every check (judge and data agree)."""
    files = ood.ood_files(ROOT / "data" / "eval_ood", phase)
    files = [p for k, p in files if k == phase]
    if not files:
        pytest.skip("no OOD set for this phase in data/eval_ood")
    records, skipped = ood.read_episodes(files[0])
    assert not skipped
    result = ood.evaluate_file(files[0], phase, TextPolicy(reference_replies(records)), workspace, get_tokenizer())
    failed = [(c.id, c.reason) for c in result.cases if not c.passed]
    assert result.pass_rate == 1.0, failed[:5]


def test_gate_callback_with_regression_runs_every_earlier_gate(tmp_path, monkeypatch):
    """callbacks.gate.regression=true: while phase 2 trains, phase 1's gate runs at the same
    step and is logged under its own prefix; the run's own result stays phase 2's."""
    import torch
    from lightning.pytorch.loggers import CSVLogger

    import mypt_lightning.inference.generation as generation
    from mypt_lightning.training.callbacks import GateCallback

    p1_cases = by_user(GATES[1])

    def reply(prompt: str) -> str:  # passes phase 1, fails the operators
        case = p1_cases.get(last_user(prompt))
        return ("nothing" if case is None else "Ja." if case.language == "de" else "Yes.") + CLOSE

    replies = TextPolicy(reply)
    monkeypatch.setattr(generation, "ModelPolicy", lambda model, sampling=None: replies)
    logger = CSVLogger(str(tmp_path), name="csv", version="")
    trainer = type("T", (), {"loggers": [logger], "default_root_dir": str(tmp_path), "global_step": 40,
                             "callback_metrics": {}})()
    module = type("M", (), {"model": torch.nn.Linear(1, 1)})()
    callback = GateCallback(2, max_cases=6, regression=True)
    assert [g.phase for g in callback.gates] == [1, 2]
    assert [g.phase for g in GateCallback(2, max_cases=6).gates] == [2]
    result = callback.run_gate(trainer, module)

    metrics = trainer.callback_metrics
    assert metrics["gate/phase1/passed"].item() == 1.0 and metrics["gate/phase2/passed"].item() == 0.0
    assert result is callback.last_result[1] and callback.last_result[0] == 40 and not result.passed
    assert [step for step, _ in callback.history] == [40]
    assert all(k.startswith("gate/phase2/") for k in callback.history[0][1])
    assert sorted(p.name for p in (tmp_path / "gates").iterdir()) == [
        "phase1_samples.csv", "phase1_step000040.json", "phase2_samples.csv", "phase2_step000040.json"]


def test_run_summary_shows_the_regression_gate():
    from mypt_lightning.training.run_summary import RunFacts, summary_lines

    p1 = GATES[1].run(p1_policy("Yes." + CLOSE, "Ja." + CLOSE)).to_dict()
    p2 = GATES[2].run(TextPolicy("nothing" + CLOSE), max_cases=4).to_dict()
    lines = summary_lines(RunFacts(run_name="1_phase2_operators", output_dir=Path("/nonexistent"), global_step=9,
                                   gate=p2, gate_where="export/", earlier_gates=[p1]))
    text = "\n".join(lines)
    assert re.search(r"gate +phase 2 operators on export/: FAILED", text)
    assert re.search(r"regression +phase 1 format_lock on export/: PASSED", text)


def test_gate_callback_stops_training_on_a_pass_only_from_the_given_step(tmp_path, monkeypatch):
    """callbacks.gate.stop_on_pass_from_step: a passing gate before that step lets training go on;
    from it on, a pass sets trainer.should_stop (decided on rank 0, broadcast to all); a fail never does."""
    import torch

    import mypt_lightning.inference.generation as generation
    from mypt_lightning.training.callbacks import GateCallback

    p1_cases = by_user(GATES[1])
    answer = {"passing": True}

    def reply(prompt: str) -> str:
        case = p1_cases.get(last_user(prompt))
        if not answer["passing"]:
            return "never closes"
        return ("Ja." if case is not None and case.language == "de" else "Yes.") + CLOSE

    monkeypatch.setattr(generation, "ModelPolicy", lambda model, sampling=None: TextPolicy(reply))
    broadcasts = []

    class Strategy:
        def broadcast(self, obj, src=0):
            broadcasts.append((obj, src))
            return obj

    def trainer_at(step):
        return type("T", (), {"loggers": [], "default_root_dir": str(tmp_path), "global_step": step,
                              "callback_metrics": {}, "sanity_checking": False, "is_global_zero": True,
                              "strategy": Strategy(), "should_stop": False, "max_steps": 2000})()

    module = type("M", (), {"model": torch.nn.Linear(1, 1)})()
    callback = GateCallback(1, max_cases=6, stop_on_pass_from_step=1000)
    early = trainer_at(400)
    callback.on_validation_end(early, module)
    assert early.callback_metrics["gate/phase1/passed"].item() == 1.0 and early.should_stop is False
    answer["passing"] = False
    failing = trainer_at(1200)
    callback.on_validation_end(failing, module)
    assert failing.callback_metrics["gate/phase1/passed"].item() == 0.0 and failing.should_stop is False
    answer["passing"] = True
    late = trainer_at(1400)
    callback.on_validation_end(late, module)
    assert late.should_stop is True
    assert broadcasts == [(False, 0), (False, 0), (True, 0)]
    # without the option nothing is broadcast and training runs to max_steps
    plain = trainer_at(1400)
    GateCallback(1, max_cases=6).on_validation_end(plain, module)
    assert plain.should_stop is False and len(broadcasts) == 3
    with pytest.raises(ValueError, match="stop_on_pass_from_step"):
        GateCallback(1, stop_on_pass_from_step=-1)
