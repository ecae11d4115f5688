"""The cluster launchers of docs/distributed.md ("### torchrun", "### SLURM with srun"), on one
node with 2 CPU processes created outside Lightning: by `torchrun --standalone --nproc_per_node 2`,
and by a stand-in for `srun` in a `--nodes=1 --ntasks-per-node=2` job (2 processes with the
variables srun sets; there is no SLURM here). Lightning must take the rank layout from the
launcher (it must not spawn processes of its own), and the 2 ranks x batch 1 must train exactly
like 1 process x batch 2 (tests/test_distributed.py's check: per-step losses and exported weights)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_distributed import assert_same_as_single_process, run_training
from helpers import write_packed_dataset
from helpers import ROOT

TIMEOUT_S = 300  # a hung rendezvous or collective fails the test instead of blocking CI
TWO_RANKS = {"data.batch_size": 1, "trainer.strategy": "ddp", "trainer.devices": 2, "trainer.accelerator": "cpu"}
# Variables of an enclosing launcher (pytest itself run under torchrun or inside a SLURM job)
# would change which cluster environment Lightning detects: the launchers here set their own.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                      "MASTER_ADDR", "MASTER_PORT")


def initializing_lines(log: str) -> list[str]:
    """Lightning's "Initializing distributed: GLOBAL_RANK: r, MEMBER: r+1/W" lines, one per rank process."""
    return [line[line.index("Initializing distributed"):] for line in log.splitlines()
            if "Initializing distributed" in line]


def clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k not in LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_", "PET_"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (torchrun starts its workers in sessions of their own, so
    killing torchrun's process group would not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    below = descendants(proc.pid)  # before the parent dies and its children are re-parented
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session): group id = pid
    except ProcessLookupError:
        pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_processes(commands: list[tuple[list[str], dict[str, str], Path]], cwd: Path) -> list[int | None]:
    """Start every (argv, env, log file) at once and wait for all of them; returns their exit codes,
    None for a process killed here. If one fails the others are killed (they would wait for it
    forever); after TIMEOUT_S all are killed and the test fails."""
    procs = []
    for argv, env, log in commands:
        with open(log, "w") as f:
            procs.append(subprocess.Popen(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        killed = [p.poll() is None for p in procs]
        for p, kill in zip(procs, killed):
            if kill:
                kill_tree(p)
    if any(killed) and time.monotonic() > deadline:
        tails = "".join(f"\n--- {log} ---\n{log.read_text()[-3000:]}" for _, _, log in commands)
        pytest.fail(f"killed after {TIMEOUT_S} s:{tails}")
    return [None if kill else p.returncode for p, kill in zip(procs, killed)]


def torchrun(run_py_args: list[str], env: dict[str, str], out: Path) -> subprocess.CompletedProcess:
    env, log = clean_env(env), out.parent / f"{out.name}.torchrun.log"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *run_py_args]
    [returncode] = run_processes([(argv, env, log)], cwd=ROOT)
    return subprocess.CompletedProcess(argv, returncode, stdout=log.read_text(), stderr="")


def srun_env(env: dict[str, str], rank: int, port: int) -> dict[str, str]:
    """What `srun` sets in task ``rank`` of `sbatch --nodes=1 --ntasks-per-node=2` (the subset
    Lightning's SLURMEnvironment reads, plus the job's identity)."""
    return {
        **env,
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mypt-launcher-test",  # not bash/interactive
        "SLURM_NNODES": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODELIST": "127.0.0.1", "SLURM_JOB_NODELIST": "127.0.0.1",
        "SLURM_NODEID": "0", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
        "MASTER_PORT": str(port),  # else Lightning derives it from the job id: a fixed port
    }


def srun(run_py_args: list[str], env: dict[str, str], out: Path) -> subprocess.CompletedProcess:
    env, port = clean_env(env), free_port()
    commands = [([sys.executable, *run_py_args], srun_env(env, rank, port), out.parent / f"{out.name}.srun{rank}.log")
                for rank in range(2)]
    codes = run_processes(commands, cwd=ROOT)
    logs = "".join(f"\n=== task {rank} ({'killed: another task failed' if code is None else f'exit {code}'}) ===\n"
                   f"{log.read_text()}" for rank, (code, (_, _, log)) in enumerate(zip(codes, commands)))
    returncode = next((code for code in codes if code not in (0, None)), 0)  # the task that failed first
    return subprocess.CompletedProcess(commands[0][0], returncode, stdout=logs, stderr="")


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_packed_dataset(tmp_path / "data", {"train": 32, "val": 4}, seed=5)


def test_torchrun_two_processes_match_one_process_with_doubled_batch(dataset, tmp_path):
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2})
    out = tmp_path / "torchrun"
    result = run_training(dataset, out, launch=lambda args, env: torchrun(args, env, out), **TWO_RANKS)
    # torchrun made both ranks; a Lightning spawn inside each worker would show 4 processes
    assert sorted(initializing_lines(result.stdout)) == [
        "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2",
        "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2",
    ], result.stdout[-3000:]
    assert "distributed_backend=gloo" in result.stdout
    assert_same_as_single_process(tmp_path / "single", tmp_path / "torchrun")


def test_srun_two_tasks_match_one_process_with_doubled_batch(dataset, tmp_path):
    run_training(dataset, tmp_path / "single", **{"data.batch_size": 2})
    out = tmp_path / "srun"
    run_training(dataset, out, launch=lambda args, env: srun(args, env, out), **TWO_RANKS)
    for rank in range(2):
        log = (tmp_path / f"srun.srun{rank}.log").read_text()
        # Lightning chose SLURMEnvironment (it logs this only for that environment) ...
        assert "SLURM auto-requeueing enabled. Setting signal handlers." in log, log[-3000:]
        # ... and took this process's rank from SLURM_PROCID, spawning no process of its own
        assert initializing_lines(log) == [f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2"], \
            log[-3000:]
    assert_same_as_single_process(tmp_path / "single", tmp_path / "srun")
