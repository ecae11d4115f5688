"""tools/prepare_phase.py: dry run of every phase, real small runs (phases 1, 2, 6 and 1b), skipping, errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers import write_jsonl
from mypt_lightning.data_prep import phase_pipeline as pp
from mypt_lightning.data_prep.phase_pipeline import cli as phase_cli
from mypt_lightning.data_prep.validate import validate_dataset
from mypt_lightning.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PHASES = sorted(p.stem for p in (REPO / "conf" / "phase").glob("[!_]*.yaml"))  # _base.yaml: shared recipe


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _run(overrides, tmp_path, **kw):
    plan = pp.build_plan([*overrides, f"paths.data_dir={tmp_path / 'data'}"], pretrain_sources=kw.pop("sources", None),
                         with_replay=kw.pop("with_replay", False), with_deps=kw.pop("with_deps", False))
    lines: list[str] = []
    result = pp.execute(plan, echo=lines.append, **kw)
    return plan, result, "\n".join(lines)


def _assert_valid(dataset: Path) -> dict:
    results = validate_dataset(dataset)
    assert all(r.passed for r in results), [(r.name, r.examples, r.not_run) for r in results if not r.passed]
    return json.loads((dataset / "dataset_metadata.json").read_text())


# ------------------------------------------------------------------------------ dry runs
@pytest.mark.parametrize("phase", PHASES)
def test_dry_run_prints_every_command_and_writes_nothing(phase, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, result, out = _run([f"phase={phase}"], tmp_path, dry_run=True, with_replay=True)
    assert _files(tmp_path) == []  # nothing written, not even a state file or an empty folder
    assert not (tmp_path / "data").exists()
    assert result["would_run"] == len(plan.steps) and result["ran"] == 0
    commands = re.findall(r"^    \$ (python tools/\S+) (.*)$", out, flags=re.M)
    assert len(commands) == len(plan.steps)
    for tool, _ in commands:
        assert (REPO / tool.split()[1]).is_file(), tool
    kinds = [c[0].split("/")[-1] for c in commands]
    assert "mix_sft_jsonl.py" in kinds and kinds.count("prepare_sft.py") == 2  # the phase + pretrain replay
    assert any(k.startswith(("generate_", "build_context")) for k in kinds)
    (target,) = plan.targets
    expected_dir = "context_extension" if phase == "phase1b_context_ext" else f"sft_{phase}"
    assert target.dataset_dir == tmp_path / "data" / expected_dir
    prepare = next(args for tool, args in commands if tool.endswith("prepare_sft.py") and expected_dir in args)
    assert f"--output_dir {tmp_path / 'data' / expected_dir}" in prepare
    assert "--enable_packing --pack_block_size 4096" in prepare
    assert ("--weighted_mask" in prepare) == (phase != "phase1b_context_ext")
    assert "NO PRE-TRAINING TEXT GIVEN" in out  # the workspace stand-in is announced loudly


def test_dry_run_cli_and_format_lock_alias(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert phase_cli.main(["phase=phase3_chat_sft", "--dry_run", f"paths.data_dir={tmp_path}/d",
                               "data_recipe.sources.oasst2.enabled=true"]) == 0
    out = capsys.readouterr().out
    assert "python tools/generate_rag_chat_sft.py" in out and "DRY RUN" in out
    # shares renormalised over the enabled sources: 0.6 / 0.25 of 5000 records
    assert "--num_examples 3529" in out and "convert_hf_dataset.py --dataset OpenAssistant/oasst2" in out
    assert "--max_examples 1471 --languages en de" in out
    assert "replay_phase1_format_lock" in out and "MISSING" in out  # the training mixture is reported
    assert phase_cli.main_phase1(["--dry_run", "--format_lock_ratio", "0.5", "--echo_ratio", "0.5",
                                            "--format_lock_math", "exclude", "--echo_gibberish", "include",
                                            "--output_dir", f"{tmp_path}/fl", "data_recipe.num_examples=100"]) == 0
    out = capsys.readouterr().out
    assert "generate_format_lock_dataset.py" in out and "--num_examples 50" in out and "--math exclude" in out
    assert "--gibberish include" in out and f"--output_dir {tmp_path}/fl " in out
    assert _files(tmp_path) == []


def test_with_deps_plans_missing_earlier_phases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, _, _ = _run(["phase=phase3_chat_sft"], tmp_path, dry_run=True, with_deps=True)
    groups = list(dict.fromkeys(s.group for s in plan.steps))
    assert groups == ["phase1_format_lock", "phase2_operators", "phase3_chat_sft"]


def test_errors_are_one_line_user_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="unknown key"):
        pp.build_plan(["phase=phase1_format_lock", "+data_recipe.sources.echo.shares=1"])
    with pytest.raises(UserError, match="has no option --colour"):
        pp.build_plan(["phase=phase1_format_lock", "+data_recipe.sources.echo.args.colour=red"])
    with pytest.raises(UserError, match="rejects the recipe's arguments"):
        pp.build_plan(["phase=phase1_format_lock", "data_recipe.sources.format_lock.args.mode=fancy"])
    with pytest.raises(UserError, match="no enabled source"):
        pp.build_plan(["phase=phase3_chat_sft", "data_recipe.sources.rag_chat.enabled=false"])
    assert phase_cli.main(["phase=no_such_phase", "--dry_run"]) == 2
    assert phase_cli.main(["phase1_format_lock", "--dry_run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("prepare_phase: error: ") for e in err)
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------ real runs
def test_phase1_real_run_validates_and_skips_what_is_up_to_date(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    over = ["phase=phase1_format_lock", "data_recipe.num_examples=200"]
    plan, result, out = _run(over, tmp_path, with_replay=True)
    assert result["ran"] == len(plan.steps) == 8
    data = tmp_path / "data"
    meta = _assert_valid(data / "sft_phase1_format_lock")
    assert meta["packed"] and meta["weighted"] and meta["block_size"] == 4096
    assert meta["counts"]["episodes"] == 200 and meta["counts"]["val_episodes"] == 10
    mixed = [json.loads(x) for x in (data / "intermediate/phase1_format_lock/phase1_format_lock_mixed.jsonl").open()]
    assert Counter(r["_meta"]["generator"] for r in mixed) == {"format_lock": 140, "echo": 60}  # 70 / 30
    replay = _assert_valid(data / "sft_pretrain_replay")
    assert replay["counts"]["replay_episodes"] == replay["counts"]["episodes"] > 0
    # unchanged recipe: nothing runs; a changed one reruns from the changed step on
    _, again, out = _run(over, tmp_path, with_replay=True)
    assert again["ran"] == 0 and "skip: up to date" in out
    _, changed, out = _run(["phase=phase1_format_lock", "data_recipe.num_examples=100"], tmp_path)
    assert changed["ran"] == 5
    assert json.loads((data / "sft_phase1_format_lock/dataset_metadata.json").read_text())["counts"]["episodes"] == 100
    # the work dir gone: the dataset is still up to date, nothing is regenerated
    for f in (data / "intermediate/phase1_format_lock").iterdir():
        f.unlink()
    _, kept, out = _run(["phase=phase1_format_lock", "data_recipe.num_examples=100"], tmp_path)
    assert kept["ran"] == 0 and "not needed" in out


def test_a_dataset_that_failed_its_checks_is_not_called_up_to_date(tmp_path, monkeypatch):
    """prepare writes the dataset (and its fingerprint) before validate runs; a failed
    validate must make the next run rebuild and check it again, not skip it."""
    from mypt_lightning.data_prep import validate

    monkeypatch.chdir(tmp_path)
    over = ["phase=phase1_format_lock", "data_recipe.num_examples=40"]
    real = validate.validate_dataset

    def failing(*args, **kwargs):
        return [*real(*args, **kwargs), validate.CheckResult("planted", checked=1, failures=1, examples=["x"])]

    monkeypatch.setattr(validate, "validate_dataset", failing)
    for _ in range(2):  # the second run must fail the same way, not skip everything
        with pytest.raises(UserError, match=r"failed the checks \['planted'\]"):
            _run(over, tmp_path)
    monkeypatch.setattr(validate, "validate_dataset", real)
    _, fixed, out = _run(over, tmp_path)
    assert "(run)" in out and fixed["ran"] == 2  # prepare and validate again; generation was fine
    _, again, _ = _run(over, tmp_path)
    assert again["ran"] == 0


def test_phase2_held_out_val_file_becomes_the_val_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(["phase=phase2_operators", "data_recipe.num_examples=200"], tmp_path)
    meta = _assert_valid(tmp_path / "data/sft_phase2_operators")
    assert (meta["counts"]["train_episodes"], meta["counts"]["val_episodes"]) == (200, 10)
    assert meta["overlap"]["user"]["shared"] == 0 and meta["overlap"]["_meta.payload"]["shared"] == 0


def test_phase6_real_run_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, result, _ = _run(["phase=phase6_agentic_rag", "data_recipe.num_examples=40"], tmp_path)
    assert result["ran"] == len(plan.steps)
    meta = _assert_valid(tmp_path / "data/sft_phase6_agentic_rag")
    assert meta["counts"]["episodes"] == 40 and meta["packed"] and meta["weighted"]
    mixed = tmp_path / "data/intermediate/phase6_agentic_rag/phase6_agentic_rag_mixed.jsonl"
    gens = Counter(json.loads(x)["_meta"]["generator"] for x in mixed.open())
    assert gens == {"tool_episodes": 30, "agent": 10}


def test_phase3_with_a_local_hf_copy_and_a_jsonl_file_of_your_own(tmp_path, monkeypatch):
    from mypt_lightning.generators import rag_chat

    monkeypatch.chdir(tmp_path)
    alpaca = tmp_path / "alpaca_de.jsonl"  # a local copy in the alpaca layout (instruction / input / output)
    write_jsonl(alpaca, ({"instruction": f"Nenne eine Farbe Nummer {i}.", "input": "", "output": f"Blau ist Farbe {i}."}
                         for i in range(40)))
    mine = tmp_path / "mine.jsonl"
    write_jsonl(mine, rag_chat.generate(20, 99).records)
    over = ["phase=phase3_chat_sft", "data_recipe.num_examples=60", "data_recipe.sources.alpaca_de.enabled=true",
            f"data_recipe.sources.alpaca_de.dataset={alpaca}",
            f"+data_recipe.sources.mine={{kind: jsonl, path: '{mine}', share: 0.25}}"]
    _, result, out = _run(over, tmp_path)
    assert "convert_hf_dataset.py --dataset" in out and f"{mine}:RATIO" in out and f"{mine}:0.75 " in out
    meta = _assert_valid(tmp_path / "data/sft_phase3_chat_sft")
    assert meta["counts"]["episodes"] == 60  # 0.6 / 0.15 / 0.25 of 60: 36 + 9 + 15 (0.75 of mine.jsonl)
    mixed = tmp_path / "data/intermediate/phase3_chat_sft/phase3_chat_sft_mixed.jsonl"
    sources = Counter(json.loads(x)["_meta"]["source"] for x in mixed.open())
    assert sources == {"rag_chat.jsonl": 36, str(alpaca): 9, "mine.jsonl": 15}


def _qa_files(d: Path) -> dict[str, Path]:
    """Local files in the hub schemas of SQuAD v2, GermanQuAD, HotpotQA (distractor) and MS MARCO."""
    towns = ["Aachen", "Bergen", "Cork", "Dijon", "Essen", "Faro", "Graz", "Haarlem", "Ieper", "Jena", "Kassel", "Lyon",
             "Mainz", "Nantes", "Oslo", "Passau", "Quimper", "Rostock", "Siena", "Trier"]
    rivers = ["Wurm", "Byelva", "Lee", "Ouche", "Ruhr", "Rio Seco", "Mur", "Spaarne", "Ijzer", "Saale", "Fulda", "Rhone",
              "Main", "Loire", "Akerselva", "Inn", "Odet", "Warnow", "Arbia", "Mosel"]
    rows: dict[str, list] = {"squad_v2": [], "germanquad": [], "hotpotqa": [], "msmarco": []}
    titles = [f"{t} (town)" for t in towns]
    for i, (town, river) in enumerate(zip(towns, rivers)):
        ctx = " ".join(f"{town} has a market square number {k} with old houses." for k in range(25))
        ctx += f" The river {river} flows through {town}."
        rows["squad_v2"].append({"id": f"sq{i}", "title": town, "context": ctx, "question": f"Which river is in {town}?",
                                 "answers": {"text": [river] if i % 4 else [], "answer_start": [ctx.index(river)] if i % 4 else []}})
        de = f"{town} ist eine alte Stadt mit vielen Gassen. Durch {town} fließt der Fluss {river}."
        rows["germanquad"].append({"id": 100 + i, "context": f"{town}\n\n{de}", "question": f"Welcher Fluss fließt durch {town}?",
                                   "answers": {"text": [river], "answer_start": [de.index(river)]}})
        other = (i + 1) % len(towns)
        rows["hotpotqa"].append({"id": f"hp{i}", "question": f"Which river flows through the town after {towns[other]}?",
                                 "answer": river, "type": "bridge", "level": "hard",
                                 "supporting_facts": {"title": [titles[i], titles[other]], "sent_id": [1, 0]},
                                 "context": {"title": titles, "sentences": [[f"{t} is a town. " * 6, f"The {r} flows through {t}."]
                                                                            for t, r in zip(towns, rivers)]}})
        rows["msmarco"].append({"query": f"river {town}", "query_id": 500 + i, "answers": [river] if i % 3 else ["No Answer Present."],
                                "wellFormedAnswers": [], "passages": {"is_selected": [int(j == i) for j in range(10)],
                                "passage_text": [f"The river {rivers[j]} flows through {towns[j]}. " * 4 for j in range(10)],
                                "url": [f"https://{towns[j].lower()}.example/" for j in range(10)]}})
    files = {}
    for name, items in rows.items():
        files[name] = d / f"{name}.jsonl"
        write_jsonl(files[name], items)
    return files


def test_phase1b_real_run_mixes_qa_and_general_text_40_60_by_tokens(tmp_path, monkeypatch):
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    monkeypatch.chdir(tmp_path)
    qa = _qa_files(tmp_path)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}. " + " ".join(f"Sentence {i}.{k} of the pre-training text about topic "
                                                               f"{i % 7} goes here." for k in range(12)) for i in range(400)))
    over = ["phase=phase1b_context_ext", "data_recipe.num_tokens=30000", "data_recipe.qa_sources.musique=null",
            "data_recipe.qa_sources.triviaqa=null", "data_recipe.sources.general.tokens_per_episode=1200",
            "data_recipe.sources.general.args.mega_tokens=1200", "data_recipe.sources.qa.tokens_per_episode=600",
            *[f"data_recipe.qa_sources.{k}={v}" for k, v in qa.items()]]
    plan, result, out = _run(over, tmp_path, sources=[str(text)])
    assert result["ran"] == len(plan.steps) and "NO PRE-TRAINING TEXT" not in out
    assert "build_context_extension_dataset.py" in out and "--mega_tokens 1200" in out and "(as run)" in out
    dataset = tmp_path / "data/context_extension"
    meta = _assert_valid(dataset)
    assert meta["packed"] and meta["block_size"] == 4096 and not meta["weighted"]
    assert meta["counts"]["replay_episodes"] == meta["counts"]["episodes"]  # plain text: every real token trained
    seg = np.fromfile(dataset / "train/segment_ids.bin", np.uint8)
    mask = np.fromfile(dataset / "train/mask.bin", np.uint8)
    assert np.array_equal(mask > 0, seg > 0)  # real tokens trained, padding masked, segments isolate episodes
    tok = get_tokenizer()
    tokens = Counter()
    for line in (tmp_path / "data/intermediate/phase1b_context_ext/phase1b_context_ext_mixed.jsonl").open():
        r = json.loads(line)
        assert r["_replay"] is True
        tokens[r["_meta"]["generator"]] += len(tok.encode_text(r["text"]))
    share = tokens["context_extension"] / sum(tokens.values())
    assert abs(share - 0.4) < 0.06, tokens
    assert {json.loads(x)["_meta"]["source"] for x in (tmp_path / "data/intermediate/phase1b_context_ext/qa.jsonl").open()} \
        == set(qa)


def test_phase1b_hub_failure_is_a_one_line_error_with_a_hint(tmp_path, monkeypatch):
    from mypt_lightning.generators import context_extension

    def offline(spec, name):
        raise ConnectionError(f"Couldn't reach '{spec}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(context_extension, "load_rows", offline)
    plan, _, out = _run(["phase=phase1b_context_ext"], tmp_path, dry_run=True)
    assert "--source squad_v2=hf" in out and "RATIO" in out
    assert plan.steps[1].notes and "capped" in plan.steps[1].notes[0]  # general text from the workspace stand-in
    with pytest.raises(UserError, match=r"generate data_recipe.sources.qa failed: ConnectionError.*no network"):
        pp.execute(plan, echo=lambda s: None)
