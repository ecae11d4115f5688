"""Real signals on real processes: training and prepare_sft stop cleanly, keep their work,
leave no debris and no orphan. Each process runs in its own session (setsid) so that a
signal to its process group reaches every process in it, as a scheduler's or a terminal's
does (`timeout`, `scancel`, Kubernetes, Ctrl-C)."""

from __future__ import annotations

import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mypt_lightning.errors import UserError
from mypt_lightning.training.fault_tolerance import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, claim_run_dir
from test_faults import run_py
from helpers import write_jsonl, write_packed_dataset
from helpers import ROOT, compose_cfg, tiny_overrides

MAX_STEPS = 30


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_packed_dataset(tmp_path_factory.mktemp("data") / "sft", {"train": 40, "val": 4}, seed=7)


# ----------------------------------------------------------------------- process helpers

def start(argv: list[str], out_dir: Path, name: str, env: dict | None = None) -> subprocess.Popen:
    """``argv`` in a new session (its own process group), output to files (no pipe to fill)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=open(out_dir / f"{name}.out", "w"), stderr=open(out_dir / f"{name}.err", "w"))


def wait_until(condition, proc: subprocess.Popen, err: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting: {err.read_text()[-3000:]}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def assert_group_gone(pgid: int, grace: float = 10.0) -> None:
    """No process of the group is left (no orphaned worker), after a short grace period."""
    deadline = time.monotonic() + grace
    while group_members(pgid):
        if time.monotonic() > deadline:
            survivors = group_members(pgid)
            for pid in survivors:  # do not leak them into the rest of the suite
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"processes of the group survived: {survivors}")
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ----------------------------------------------------------------------- training

def training(dataset: Path, run_dir: Path, **extra) -> list[str]:
    return [sys.executable, "run.py", *tiny_overrides(dataset, run_dir, logger="csv", **{
        "hydra.run.dir": str(run_dir), "train.max_steps": MAX_STEPS, "train.checkpoint_every_steps": 1000,
        "train.eval_every_steps": 5, "data.num_workers": 2, **extra})]


def marked(marker: Path, **extra) -> dict:
    """MarkSteps: the run reports its steps in ``marker`` and sleeps a little per micro-batch."""
    return {"+callbacks.mark._target_": "fault_injection.MarkSteps", "+callbacks.mark.marker": str(marker),
            "+callbacks.mark.seconds": 0.1, **extra}


def trained_steps(marker: Path) -> int:
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0


def assert_clean_stop(err: str, signal_name: str) -> None:
    assert "killed by signal" not in err and "exited unexpectedly" not in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert f"[mypt] {signal_name}: stopped at step" in err, err[-3000:]


def assert_resumes_and_finishes(dataset: Path, run_dir: Path, stopped_at: int) -> None:
    resumed = run_py(training(dataset, run_dir, ckpt_path="last")[2:], check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed.stderr
    exported = json.loads((run_dir / "export" / "config.json").read_text())
    assert exported["extra"]["global_step"] == MAX_STEPS > stopped_at


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGTERM, PREEMPTED_EXIT_CODE),
                                              (signal.SIGINT, INTERRUPTED_EXIT_CODE)])
def test_signal_to_the_process_group_saves_at_the_step_end(dataset, tmp_path, signum, exit_code):
    """`kill -TERM -- -PGID` (a scheduler) or Ctrl-C (SIGINT to the terminal's foreground
    group) with 2 DataLoader workers: the workers ignore it, the main process finishes the
    step, saves last.ckpt and exits 143 / 130; nothing of the group is left; it resumes."""
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    proc = start(training(dataset, run_dir, **marked(marker)), tmp_path, "run")
    try:
        wait_until(lambda: trained_steps(marker) >= 2, proc, tmp_path / "run.err")
        os.killpg(proc.pid, signum)
        assert proc.wait(timeout=120) == exit_code, (tmp_path / "run.err").read_text()[-3000:]
    finally:
        kill_group(proc)
    err = (tmp_path / "run.err").read_text()
    assert_clean_stop(err, signum.name)
    assert "resume with the same command plus ckpt_path=last (run_name=phase1_format_lock" in err
    if signum == signal.SIGINT:
        assert "[mypt] Ctrl-C: saving last.ckpt at the end of this step" in err
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["mypt_train_state"]["micro_step"] == 0  # a step boundary
    assert 2 <= ckpt["global_step"] < MAX_STEPS
    assert_group_gone(proc.pid)
    assert_resumes_and_finishes(dataset, run_dir, ckpt["global_step"])


def test_second_ctrl_c_stops_at_once(dataset, tmp_path):
    """Two Ctrl-Cs while a step takes long (60 s): the second one stops the run within
    seconds, exit 130, one line saying there is nothing to resume (no checkpoint yet)."""
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    stall = marked(marker, **{"+callbacks.mark.stall_at_step": 2, "+callbacks.mark.stall_seconds": 60})
    proc = start(training(dataset, run_dir, **stall), tmp_path, "run")
    try:
        wait_until(lambda: marker.exists() and marker.read_text() == "stalled", proc, tmp_path / "run.err")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        signalled = time.monotonic()
        assert proc.wait(timeout=60) == INTERRUPTED_EXIT_CODE, (tmp_path / "run.err").read_text()[-3000:]
        assert time.monotonic() - signalled < 15  # the stalled step had 60 s to go
    finally:
        kill_group(proc)
    err = (tmp_path / "run.err").read_text()
    assert "Traceback" not in err, err[-3000:]
    assert "[mypt] SIGINT: stopped at once at step 2, without saving; no checkpoint to resume yet" in err
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert_group_gone(proc.pid)


class _WorkerState(torch.utils.data.Dataset):
    """What a DataLoader worker looks like from inside: its signal setup and its RNG."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        import random

        blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return {"sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN, "sigterm_blocked": blocked,
                "python": random.random(), "torch": float(torch.rand(()))}


def test_loader_workers_leave_signals_to_the_main_process_and_keep_lightnings_seeding(dataset, monkeypatch):
    from functools import partial

    from lightning.fabric.utilities.seed import pl_worker_init_function

    from data_modules.datamodule import SFTDataModule, WorkerInit

    module = SFTDataModule(dataset_dir=str(dataset), batch_size=2, block_size=64, epoch_seed=1, num_workers=1)
    assert isinstance(module.train_dataloader().worker_init_fn, WorkerInit)
    assert all(isinstance(loader.worker_init_fn, WorkerInit) for loader in module.val_dataloader())

    monkeypatch.setenv("PL_SEED_WORKERS", "1")  # what seed_everything(workers=True) sets

    def first_item(init):
        loader = torch.utils.data.DataLoader(_WorkerState(), batch_size=None, num_workers=1, worker_init_fn=init,
                                             generator=torch.Generator().manual_seed(3))
        return next(iter(loader))

    ours, lightnings = first_item(WorkerInit(os.getpid(), rank=0)), first_item(partial(pl_worker_init_function, rank=0))
    assert ours["sigint_ignored"] and ours["sigterm_blocked"]
    assert not lightnings["sigterm_blocked"]
    assert (ours["python"], ours["torch"]) == (lightnings["python"], lightnings["torch"])


# ----------------------------------------------------------------------- run directory

def previous_run(run_dir: Path) -> dict[str, bytes]:
    """What a finished earlier run leaves (small stand-ins for its files)."""
    files = {"checkpoints/step000002.ckpt": b"old checkpoint", "checkpoints/last.ckpt": b"old last",
             "run_info.json": b'{"run_id": "0ld0ld00"}', "csv/metrics.csv": b"step,train/loss\n1,9.0\n"}
    for name, data in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    return files


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.name != "run.log"}


def test_new_run_into_a_previous_run_is_refused_before_anything_changes(dataset, tmp_path):
    run_dir = tmp_path / "run"
    previous_run(run_dir)
    before = snapshot(run_dir)
    result = run_py(training(dataset, run_dir)[2:], check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: run directory {run_dir} already holds a previous run (checkpoints/, csv/, "
                                "run_info.json)"), result.stderr[-2000:]
    for way_on in ("ckpt_path=last", "run_name=", "overwrite=true"):
        assert way_on in lines[-1]
    assert "Traceback" not in result.stderr
    assert snapshot(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_moves_the_previous_run_aside_and_starts_fresh(dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    files = previous_run(run_dir)
    train_cfg = compose_cfg(tiny_overrides(dataset, run_dir, logger="csv", overwrite="true", **{
        "data.num_workers": 0, "train.max_steps": 2}))
    from mypt_lightning.training.train import train

    train(train_cfg)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert f"[mypt] overwrite=true: moved the previous run in {run_dir} aside to {aside}" in capsys.readouterr().out
    assert {str(p.relative_to(aside)): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]  # none of the old ones
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert json.loads((run_dir / "run_info.json").read_text())["run_id"] != "0ld0ld00"


def test_what_counts_as_a_previous_run(tmp_path, monkeypatch):
    def claim(ckpt_path=None, resuming=False, overwrite=False):
        claim_run_dir(run_dir, ckpt_path, resuming=resuming, overwrite=overwrite, run_name="r")

    run_dir = tmp_path / "run"
    claim()  # no directory yet
    (run_dir / ".hydra").mkdir(parents=True)  # Hydra writes these for THIS run before train() starts
    (run_dir / ".hydra" / "config.yaml").write_text("x: 1\n")
    (run_dir / "run.log").write_text("")
    claim()
    # A requeued job (ckpt_path=auto) killed before its first checkpoint: only its logs; it starts again.
    (run_dir / "run_info.json").write_text("{}")
    (run_dir / "csv").mkdir()
    claim("auto")
    with pytest.raises(UserError, match=r"already holds a previous run \(csv/, run_info.json\)"):
        claim()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "step000004.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match="already holds a previous run"):
        claim("auto")  # checkpoints but no last.ckpt: starting over would mix them
    claim("last", resuming=True)
    with pytest.raises(UserError, match="overwrite=true starts a new run, ckpt_path=last resumes one"):
        claim("last", resuming=True, overwrite=True)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank started by the first process: it follows that one
    claim()


# ----------------------------------------------------------------------- prepare_sft

def write_records(path: Path, count: int) -> Path:
    return write_jsonl(path, ({"messages": [
        {"role": "user", "content": f"Frage {i}: " + "wie geht es dir heute " * 8},
        {"role": "assistant", "content": f"Antwort {i}: " + "mir geht es gut danke " * 8}]} for i in range(count)))


def prepare(inputs: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "tools/prepare_sft.py", "--input", str(inputs), "--output_dir", str(out),
            "--no_progress", *flags]


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """~20 s of tokenizing on 2 workers here: time to signal it mid-run."""
    return write_records(tmp_path_factory.mktemp("prep") / "big.jsonl", 25_000)


@pytest.mark.parametrize("signum,exit_code,message", [
    (signal.SIGTERM, 143, "prepare_sft: stopped by SIGTERM; temporary files removed (an output appears only when complete)"),
    (signal.SIGINT, 130, "prepare_sft: interrupted; no output was written")])
def test_prepare_sft_signal_to_the_group_cleans_up(tmp_path, big_input, signum, exit_code, message):
    """SIGTERM (a scheduler) or Ctrl-C to prepare_sft's process group while its 2 workers
    tokenize: one line, exit 143 / 130, no scratch or temp folder, the old dataset as it
    was, no process left."""
    out = tmp_path / "ds"
    old = subprocess.run(prepare(write_records(tmp_path / "small.jsonl", 50), out), cwd=ROOT,
                         capture_output=True, text=True)
    assert old.returncode == 0, old.stderr
    before = tree_bytes(out)
    proc = start(prepare(big_input, out, "--overwrite", "--num_workers", "2"), tmp_path, "prep")
    try:
        wait_until(lambda: leftovers(tmp_path, "ds") and len(children(proc.pid)) >= 2, proc, tmp_path / "prep.err")
        time.sleep(1.0)  # the pool is tokenizing
        os.killpg(proc.pid, signum)
        assert proc.wait(timeout=60) == exit_code, (tmp_path / "prep.err").read_text()
    finally:
        kill_group(proc)
    err = (tmp_path / "prep.err").read_text()
    assert err.strip().splitlines() == [message], err
    assert leftovers(tmp_path, "ds") == []  # no .ds.scratch-*, no .ds.tmp-*
    assert tree_bytes(out) == before  # the old dataset is untouched
    assert_group_gone(proc.pid)


def test_prepare_sft_workers_die_with_a_sigkilled_parent(tmp_path):
    """A worker busy with a long record (~10 s of tokenizing here) when its parent is
    SIGKILLed used to run on as an orphan; the kernel now kills it with the parent."""
    out, source = tmp_path / "ds", tmp_path / "giant.jsonl"
    giant = {"messages": [{"role": "user", "content": "wie geht es dir heute " * 1_800_000},
                          {"role": "assistant", "content": "gut"}]}
    source.write_text(json.dumps(giant) + "\n" + write_records(tmp_path / "rest.jsonl", 2000).read_text())
    proc = start(prepare(source, out, "--num_workers", "2"), tmp_path, "prep")
    try:
        wait_until(lambda: leftovers(tmp_path, "ds") and len(children(proc.pid)) >= 2, proc, tmp_path / "prep.err")
        time.sleep(1.5)  # a worker is in the giant record
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not the group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if alive(pid)], "pool workers outlived their parent"
    finally:
        kill_group(proc)
    stale = leftovers(tmp_path, "ds")
    assert stale and all(name.startswith(".ds.scratch-") for name in stale)

    # The next run writing the same output removes the dead run's scratch folder and says so.
    again = subprocess.run(prepare(write_records(tmp_path / "small.jsonl", 50), out), cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"prepare_sft: removed what an interrupted earlier run left beside {out}: {', '.join(stale)}" \
        in again.stderr
    assert leftovers(tmp_path, "ds") == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (mounting needs root; skipped where not permitted)."""
    mounts = []

    def mount(name: str, *options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


def test_prepare_sft_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_tmpfs):
    disk = small_tmpfs("disk")
    source = write_records(tmp_path / "in.jsonl", 4000)  # ~1.7 MB of scratch for a 1 MiB disk
    result = subprocess.run(prepare(source, disk / "ds", "--num_workers", "1"), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"prepare_sft: error: no space left on device writing {disk / 'ds'}: free space or choose another "
        f"output (nothing was written, temporary files removed)"], result.stderr
    assert list(disk.iterdir()) == []  # the disk is as empty as before


def test_prepare_sft_read_only_output_is_one_line(tmp_path, small_tmpfs):
    disk = small_tmpfs("ro", "ro")
    result = subprocess.run(prepare(write_records(tmp_path / "in.jsonl", 20), disk / "ds"), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"prepare_sft: error: read-only file system: {disk / 'ds'}: "), line


@pytest.mark.parametrize("where", ["scratch", "dataset", "mkdir"])
def test_prepare_sft_disk_errors_in_process(tmp_path, monkeypatch, capsys, where):
    """Full disk while writing the scratch files (pass 1) or the dataset (pass 2), and a
    permission error creating the scratch folder: one line naming the output, exit 2,
    nothing left behind, an existing output untouched."""
    from data_modules.episode_writer import SplitWriter
    from mypt_lightning.data_prep import prepare as prepare_module

    prep = runpy.run_path(str(ROOT / "tools" / "prepare_sft.py"))["main"]
    source, out = write_records(tmp_path / "in.jsonl", 30), tmp_path / "ds"
    assert prep(["--input", str(source), "--output_dir", str(out), "--no_progress"]) == 0
    before = tree_bytes(out)
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "scratch":
        original = prepare_module._Store.add

        def add_then_full(self, *args):
            original(self, *args)
            full()

        monkeypatch.setattr(prepare_module._Store, "add", add_then_full)
        expected = f"no space left on device writing {out}"
    elif where == "dataset":
        monkeypatch.setattr(SplitWriter, "add_episode", full)
        expected = f"no space left on device writing {out}"
    else:
        mkdir = os.mkdir

        def denied(path, *args, **kwargs):
            if ".ds.scratch-" in os.fspath(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", denied)
        expected = f"permission denied: {out}"
    code = prep(["--input", str(source), "--output_dir", str(out), "--no_progress", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"prepare_sft: error: {expected}"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in.jsonl"]
    assert tree_bytes(out) == before
