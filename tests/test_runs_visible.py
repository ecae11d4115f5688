"""Runs you can see (issue 14): plots from a run's own logs, the console and run.log, the
end-of-run summary."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from mypt_lightning.training.loggers import ResumableCSVLogger
from mypt_lightning.training.plots import load_run, plot_runs, read_csv_metrics, read_wandb_offline

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> tuple[int, int]:
    """A well-formed PNG (signature, IHDR with a valid CRC, an IEND): returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    ihdr = data[16:16 + 13]
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(b"IHDR" + ihdr)
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    width, height = struct.unpack(">II", ihdr[:8])
    assert width > 100 and height > 100
    return width, height


def write_run(run_dir: Path, steps: int, phase: str, seed: float = 0.0, val_sets=("val", "de")) -> Path:
    """A run directory whose csv/metrics.csv is written by our CSV logger (the real format)."""
    logger = ResumableCSVLogger(save_dir=str(run_dir), name="csv", version="")
    for step in range(1, steps + 1):
        logger.log_metrics({"train/loss": 5.0 - 0.1 * step + seed, "train/lr": 1e-3 * step / steps,
                            "train/grad_norm": 1.0 + 0.01 * step, "train/supervised_fraction": 0.5,
                            **({"train/tokens_per_sec": 1000.0 + step} if step > 1 else {})}, step=step)
        if step % 2 == 0:
            logger.log_metrics({f"val/{name}/loss": 4.0 - 0.05 * step + i for i, name in enumerate(val_sets)},
                               step=step)
            logger.log_metrics({"gate/phase1/pass_rate": step / steps, "gate/phase1/passed": 0.0}, step=step)
    logger.save()
    (run_dir / "run_info.json").write_text(f'{{"phase": "{phase}", "run_name": "{run_dir.name}"}}')
    return run_dir


def csv_columns(path: Path) -> dict[str, dict[int, float]]:
    """The CSV parsed the plain way (every non-empty cell), to compare the reader against."""
    out: dict[str, dict[int, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key != "step" and value != "":
                    out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def test_plots_of_one_run_hold_the_csv_values(tmp_path):
    run = write_run(tmp_path / "run", steps=6, phase="phase1_format_lock")
    expected = csv_columns(run / "csv" / "metrics.csv")
    series = read_csv_metrics(run / "csv" / "metrics.csv")
    assert {k: dict(zip(*v)) for k, v in series.items()} == expected
    assert expected["val/de/loss"] == {2: pytest.approx(4.9), 4: pytest.approx(4.8), 6: pytest.approx(4.7)}

    plots = {p.path.name: p for p in plot_runs([load_run(run)], tmp_path / "plots")}
    assert sorted(plots) == sorted(["train_loss.png", "val_loss.png", "lr.png", "grad_norm.png", "tokens_per_sec.png",
                                    "supervised_fraction.png", "gate_pass_rates.png", "overview.png"])
    for plot in plots.values():
        check_png(plot.path)
    # what was drawn is the CSV's data: one line per eval set, the gate's rates without its verdict
    assert plots["val_loss.png"].lines == {
        name: (sorted(expected[f"val/{name}/loss"]), [expected[f"val/{name}/loss"][s] for s in (2, 4, 6)])
        for name in ("de", "val")}
    assert plots["train_loss.png"].lines["train/loss"] == (list(range(1, 7)), [expected["train/loss"][s] for s in range(1, 7)])
    assert plots["tokens_per_sec.png"].lines["train/tokens_per_sec"][0] == [2, 3, 4, 5, 6]
    assert list(plots["gate_pass_rates.png"].lines) == ["phase1/pass_rate"]


def test_two_runs_overlaid_or_chained(tmp_path):
    a = load_run(write_run(tmp_path / "0_phase1_format_lock", steps=4, phase="phase1_format_lock"))
    b = load_run(write_run(tmp_path / "1_phase2_operators", steps=6, phase="phase2_operators", seed=1.0))
    chained = {p.path.name: p for p in plot_runs([a, b], tmp_path / "chain")}  # different phases: a curriculum
    lines = chained["train_loss.png"].lines
    assert lines["0_phase1_format_lock"][0] == [1, 2, 3, 4]
    assert lines["1_phase2_operators"][0] == [5, 6, 7, 8, 9, 10]  # phase 2 after phase 1's 4 steps
    assert lines["1_phase2_operators"][1] == pytest.approx([6.0 - 0.1 * s for s in range(1, 7)])

    sweep = [a, load_run(write_run(tmp_path / "2_phase1_format_lock", steps=4, phase="phase1_format_lock", seed=0.5))]
    overlaid = {p.path.name: p for p in plot_runs(sweep, tmp_path / "overlay")}  # same phase: a sweep
    lines = overlaid["val_loss.png"].lines
    assert set(lines) == {"0_phase1_format_lock: val", "0_phase1_format_lock: de",
                          "2_phase1_format_lock: val", "2_phase1_format_lock: de"}
    assert lines["2_phase1_format_lock: de"][0] == [2, 4]
    for plot in overlaid.values():
        check_png(plot.path)


def test_resumed_csv_keeps_its_columns_and_later_rows_win(tmp_path):
    run = write_run(tmp_path / "run", steps=4, phase="phase1_format_lock")
    # The resumed process redoes step 4 and logs no validation before it saves: the old
    # val/gate columns must survive (Lightning's writer rewrote the header without them).
    resumed = ResumableCSVLogger(save_dir=str(run), name="csv", version="", resume="last")
    for step in (4, 5):
        resumed.log_metrics({"train/loss": 1.0 + step, "train/lr": 0.5}, step=step)
    resumed.save()
    series = load_run(run).series
    assert dict(zip(*series["train/loss"])) == pytest.approx({1: 4.9, 2: 4.8, 3: 4.7, 4: 5.0, 5: 6.0})
    assert dict(zip(*series["val/val/loss"])) == pytest.approx({2: 3.9, 4: 3.8})


def test_wandb_offline_file_is_read(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="t", dir=str(tmp_path), mode="offline", name="plot-test")
    logged = {}
    for step in range(1, 6):
        row = {"train/loss": 3.0 / step, "val/val/loss": 2.0 + step, "trainer/global_step": step * 10}
        run.log(row)
        logged[step * 10] = row
    run.finish()
    wandb.teardown()  # waits for W&B's service to have written the file (finish() alone may not)
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    series = read_wandb_offline(files[0])
    assert series["train/loss"] == ([10, 20, 30, 40, 50], pytest.approx([3.0 / s for s in range(1, 6)]))
    assert series["val/val/loss"][1] == pytest.approx([3.0, 4.0, 5.0, 6.0, 7.0])
    # a run directory with only W&B logs plots from them
    assert load_run(tmp_path).series["train/loss"][0] == [10, 20, 30, 40, 50]


def test_plot_run_cli(tmp_path):
    a = write_run(tmp_path / "a", steps=4, phase="phase1_format_lock")
    b = write_run(tmp_path / "b", steps=4, phase="phase1_format_lock", seed=1.0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "tools/plot_run.py", str(a), str(b), "--output", str(tmp_path / "out")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "(overlay)" in result.stdout
    check_png(tmp_path / "out" / "overview.png")
    bad = subprocess.run([sys.executable, "tools/plot_run.py", str(tmp_path / "nope")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a run directory" in bad.stderr


def test_summary_shows_each_criterion_and_the_hints_of_failed_ones(tmp_path):
    from mypt_lightning.gates import GATES
    from mypt_lightning.inference.generation import TextPolicy
    from mypt_lightning.training.run_summary import RunFacts, summary_lines

    close = "</myPT_assistant><myPT_eot>"
    # English everywhere: the English prompts pass, the German ones get English answers.
    result = GATES[1].run(TextPolicy(lambda prompt: "Hello!" + close))
    facts = RunFacts("demo", tmp_path, global_step=200, max_steps=200, seconds=61.0, tokens=122000, train_loss=1.25,
                     val_metrics={"val/val/loss": 1.5, "val/val/ppl": 4.48}, gate=result.to_dict(), gate_where="export/")
    text = "\n".join(summary_lines(facts))
    assert "200/200 in 0:01:01, 2000 tokens/s" in text
    assert "train loss    1.2500" in text and "val loss      val 1.5000" in text
    assert "phase 1 format_lock on export/: FAILED" in text
    by_metric = {c.metric: c for c in GATES[1].criteria}
    for entry in result.criteria:
        line = next(l for l in text.splitlines() if l.strip().startswith(entry["metric"] + " "))
        assert f"{entry['actual']:.3f} {entry['op']} {entry['value']:.2f}" in line
        if entry["ok"]:
            assert line.rstrip().endswith("ok")
        else:
            assert f"FAILED  -> {by_metric[entry['metric']].hint}" in line
    assert not result.passed and "answers_in_de" in text.split("failed:")[1]
    assert "EN  Say hello.  ->  'Hello!'" in text
    assert "DE  Sag hallo.  ->  'Hello!'  (fail: " in text


def _run(args, env, timeout=600):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_tiny_run_console_run_log_summary_plots_and_resume(tmp_path):
    from helpers import write_packed_dataset

    data = write_packed_dataset(tmp_path / "sft", {"train": 40, "val": 4})
    overrides = [
        "model=tiny", "trainer=cpu", "logger=csv", "data_mix=none", "phase=phase1_format_lock", "init_from=null",
        f"phase.dataset_dir={data}", f"paths.output_root={tmp_path / 'runs'}", "run_name=visible",
        "model.n_embd=32", "model.n_head=2", "model.n_layer=2", "model.block_size=64", "model.rope_scale=1.0",
        "optim.warmup_steps=1", "train.accumulate_grad_batches=2", "train.eval_every_steps=2",
        "train.checkpoint_every_steps=2", "data.batch_size=2", "data.num_workers=0", "data.max_val_samples=4",
        "curriculum.run_gate=true", "curriculum.gate_max_cases=4", "callbacks=gate", "callbacks.gate.max_cases=4",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = _run([*overrides, "train.max_steps=4"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    # optimizer steps (2 micro-batches each) of max_steps, not micro-batches of an unknown total
    assert "[mypt] step 4/4 (100%)" in out and "/8" not in out and "/?" not in out
    validations = [l for l in out.splitlines() if " validation: " in l]
    assert [l.split(" validation")[0] for l in validations] == ["[mypt] step 2", "[mypt] step 4"]
    assert all("val: loss " in l for l in validations)
    assert "[mypt] step 2 gate phase 1: FAIL (pass_rate " in out  # the gate run at each validation, one line
    assert "Validation DataLoader" not in out + first.stderr
    assert "Tip:" not in out + first.stderr and "LeafSpec" not in out + first.stderr
    run_dir = tmp_path / "runs" / "visible"
    log = (run_dir / "run.log").read_text()
    assert "\x1b" not in log and "\r" not in log
    assert "[mypt] step 4/4" in log and "[mypt] ---- summary of visible ----" in log
    summary = out[out.index("---- summary"):]
    assert summary.strip().splitlines()[-1] in log  # the summary's last line reached run.log
    assert "gate          phase 1 format_lock on export/: FAILED" in summary  # 4 steps of a random model
    assert "-> " in summary and "EN  " in summary and "DE  " in summary
    for what in ("run dir", "checkpoints", "export", "gate report", "logs", "plots"):
        assert f"  {what} " in summary, what
    for name in ("train_loss", "val_loss", "lr", "grad_norm", "tokens_per_sec", "supervised_fraction",
                 "gate_pass_rates", "overview"):
        check_png(run_dir / "plots" / f"{name}.png")

    # the resume draws the bar (as on a terminal): it starts at the checkpoint's step, of max_steps
    resumed = _run([*overrides, "train.max_steps=6", "ckpt_path=last", "callbacks.progress_bar.tty=true"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    bar = resumed.stdout
    assert "Training (steps)" in bar and "| 4/6 [" in bar and "| 6/6 [" in bar and "/?" not in bar
    assert "resumed at step 4, 2 steps in this process" in bar
    log = (run_dir / "run.log").read_text()
    assert log.count("---- summary of visible ----") == 2 and "\x1b" not in log and "\r" not in log
    assert "[mypt] step 5/6" in log and "[mypt] step 6/6 (100%)" in log  # the bar's steps as lines
    rows = csv_columns(run_dir / "csv" / "metrics.csv")
    assert sorted(rows["train/loss"]) == [1, 2, 3, 4, 5, 6] and sorted(rows["val/val/loss"]) == [2, 4, 6]


def test_known_harmless_warnings_are_hidden_and_others_are_not():
    """Lightning's model-summary note under bf16-mixed (its MB estimate only) is hidden; an
    unlisted warning still reaches the user."""
    import warnings

    from mypt_lightning.training.console import silence_known_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB "
                      "will not be accurate. Using 32 bits instead.", UserWarning)
        warnings.warn("something the user must see", UserWarning)
    assert [str(w.message) for w in caught] == ["something the user must see"]
