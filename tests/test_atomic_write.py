"""data_modules.atomic_write: every output is complete or absent, a killed writer's debris is
removed by the next write, and a full disk / read-only / forbidden output is one line naming it."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_jsonl
from data_modules import atomic_write as aw
from data_modules.atomic_write import (
    OutputWriteError,
    atomic_directory,
    atomic_file,
    remove_stale_temps,
    replace_directory,
    temp_path,
    write_json_atomic,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[1]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


# ----------------------------------------------------------------------------- files


def test_atomic_file_writes_the_exact_bytes_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_file(target, "w", newline="\n") as f:
        f.write("héllo\nwörld\n")
    assert target.read_bytes() == "héllo\nwörld\n".encode("utf-8")
    assert listing(target.parent) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    target.chmod(0o640)
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_json_helpers_write_what_the_callers_wrote_before(tmp_path):
    payload = {"b": [1, "ä"], "a": None}
    write_json_atomic(tmp_path / "r.json", payload, indent=2, ensure_ascii=False)
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    write_json_atomic(tmp_path / "s.json", payload, indent=1, sort_keys=True)
    assert (tmp_path / "s.json").read_text() == json.dumps(payload, indent=1, sort_keys=True) + "\n"


@pytest.mark.parametrize("error", [ValueError("bad record"), KeyboardInterrupt()])
def test_exception_in_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(type(error)):
        with atomic_file(target) as f:
            f.write("half of the new content")
            raise error
    assert target.read_text() == "old\n"
    assert listing(tmp_path) == ["out.jsonl"]


class _FullDiskHandle:
    """A file handle whose writes fail as on a full disk (what write(2) returns: ENOSPC)."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()
        return False


def test_full_disk_is_one_line_naming_the_output_and_leaves_no_debris(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(aw.os, "fdopen", lambda *a, **k: _FullDiskHandle(real_fdopen(*a, **k)))
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(OutputWriteError) as info:
        with atomic_file(target) as f:
            f.write('{"a": 1}\n')
    message = str(info.value)
    assert message == f"no space left on device writing {target}: free space or choose another output"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_text() == "old\n" and listing(tmp_path) == ["out.jsonl"]


def test_full_disk_at_fsync_is_the_same_error(tmp_path, monkeypatch):
    # Delayed allocation: the data is accepted by write() and refused when it reaches the disk.
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(aw.os, "fsync", fsync)
    with pytest.raises(OutputWriteError, match=r"^no space left on device writing .*out\.bin: free space"):
        aw.write_bytes_atomic(tmp_path / "out.bin", b"x" * 100)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("code,expected", [
    (errno.EROFS, "read-only file system: {target}: choose an output on a writable file system"),
    (errno.EACCES, "permission denied: {target}: choose an output you may write to, or fix its permissions"),
    (errno.EDQUOT, "disk quota exceeded writing {target}: free space or choose another output"),
])
def test_unwritable_location_is_one_line_naming_the_output(tmp_path, monkeypatch, code, expected):
    # We run as root, so chmod 0o555 would not stop us: the refusal the kernel gives is simulated.
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if ".tmp-" in os.fspath(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(aw.os, "open", refusing_open)
    target = tmp_path / "report.json"
    with pytest.raises(OutputWriteError) as info:
        write_json_atomic(target, {"a": 1})
    assert str(info.value) == expected.format(target=target)
    assert "\n" not in str(info.value) and listing(tmp_path) == []


def test_permission_error_on_an_input_inside_the_block_is_not_blamed_on_the_output(tmp_path):
    with pytest.raises(PermissionError) as info:
        with atomic_file(tmp_path / "out.txt") as f:
            f.write("x")
            raise PermissionError(errno.EACCES, "Permission denied", "/data/input.jsonl")
    assert not isinstance(info.value, OutputWriteError) and listing(tmp_path) == []


def test_a_directory_in_the_way_is_named(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(OutputWriteError, match="out.json is a directory"):
        write_text_atomic(tmp_path / "out.json", "x")


def test_leftover_of_a_sigkilled_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "state.json"
    target.write_text('{"old": true}\n')
    # A real writer, killed by SIGKILL in the middle of its write: its temp file stays behind.
    code = (f"import os, signal\nfrom data_modules.atomic_write import atomic_file\n"
            f"with atomic_file({str(target)!r}) as f:\n"
            f"    f.write('half'); f.flush()\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in listing(tmp_path) if p != "state.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".state.json.tmp-")
    assert target.read_text() == '{"old": true}\n'  # the killed write never touched the target

    live = temp_path(target)  # a writer that is still running (this process) keeps its temp
    live.write_text("in progress")
    legacy = tmp_path / ".state.json.tmp"  # the fixed name earlier versions used
    legacy.write_text("x")
    write_text_atomic(target, '{"new": true}\n')
    assert target.read_text() == '{"new": true}\n'
    assert listing(tmp_path) == sorted([live.name, "state.json"])


def test_remove_stale_temps_keeps_other_names_and_live_writers(tmp_path):
    stale = tmp_path / f".x.bin.tmp-{aw._HOST}-{dead_pid()}-0a0b0c0d"
    stale.mkdir()
    (stale / "f").write_text("1")
    foreign = tmp_path / ".x.bin.tmp-otherhost-1-0a0b0c0d"  # another host's writer: judged by age only
    foreign.write_text("1")
    unrelated = [tmp_path / "x.bin", tmp_path / ".y.bin.tmp-h-1-00", tmp_path / ".x.binary.tmp-h-1-00"]
    for p in unrelated:
        p.write_text("keep")
    assert remove_stale_temps(tmp_path, "x.bin") == [stale]
    assert listing(tmp_path) == sorted([foreign.name] + [p.name for p in unrelated])
    os.utime(foreign, (0, 0))
    assert remove_stale_temps(tmp_path, "x.bin") == [foreign]


# ----------------------------------------------------------------------------- directories


def test_atomic_directory_replaces_only_what_it_may(tmp_path):
    out = tmp_path / "export"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert listing(out) == ["a.txt"] and listing(tmp_path) == ["export"]
    with atomic_directory(out, replaceable=lambda p: (p / "a.txt").exists()) as tmp:
        (tmp / "b.txt").write_text("2")
    assert listing(out) == ["b.txt"] and listing(tmp_path) == ["export"]
    with pytest.raises(OutputWriteError, match="exists and is not a previous model; refusing to overwrite it"):
        with atomic_directory(out, replaceable=lambda p: False, what="a previous model"):
            raise AssertionError("the refusal comes before anything is written")
    assert listing(out) == ["b.txt"] and listing(tmp_path) == ["export"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_directory_keeps_the_old_folder_on_any_exception(tmp_path, error):
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        with atomic_directory(out, replaceable=lambda p: True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise error
    assert listing(out) == ["old.txt"] and listing(tmp_path) == ["export"]


def test_atomic_directory_full_disk_names_the_folder(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(OutputWriteError) as info:
        with atomic_directory(out) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "model.safetensors"))
    assert str(info.value) == f"no space left on device writing {out}: free space or choose another output"
    assert listing(tmp_path) == []


def test_rename_aside_swap_rolls_back_when_the_new_folder_cannot_take_the_place(tmp_path, monkeypatch):
    # Where renameat2's exchange is unavailable: old folder aside, new one in, or the old one back.
    monkeypatch.setattr(aw, "_exchange", lambda a, b: False)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "new").write_text("new")
    real_rename = os.rename

    def rename(src, dst):
        if Path(src) == new:
            raise OSError(errno.EIO, "I/O error", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(aw.os, "rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        replace_directory(new, out)
    assert listing(out) == ["old"] and listing(tmp_path) == ["ds", "new"]
    monkeypatch.setattr(aw.os, "rename", real_rename)
    replace_directory(new, out)
    assert listing(out) == ["new"] and listing(tmp_path) == ["ds"]


def test_swap_interrupted_between_its_renames_is_rolled_back_by_the_next_writer(tmp_path):
    # SIGKILL after "old folder aside" and before "new folder in": no target, a complete old copy.
    aside = tmp_path / f".ds.old-{aw._HOST}-{dead_pid()}-01020304"
    aside.mkdir()
    (aside / "dataset_metadata.json").write_text("{}")
    half = tmp_path / f".ds.tmp-{aw._HOST}-{dead_pid()}-01020304"
    half.mkdir()
    remove_stale_temps(tmp_path, "ds")
    assert listing(tmp_path) == ["ds"] and listing(tmp_path / "ds") == ["dataset_metadata.json"]


def test_replace_directory_replaces_a_single_file_checkpoint(tmp_path):
    # A sharded checkpoint folder taking the place of a one-file last.ckpt (trainer changed to fsdp).
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old single-file checkpoint")
    new = tmp_path / "new"
    new.mkdir()
    (new / "meta.pt").write_bytes(b"m")
    replace_directory(new, target)
    assert listing(target) == ["meta.pt"] and listing(tmp_path) == ["last.ckpt"]


def test_output_write_error_is_caught_by_the_data_tools_cli(tmp_path):
    """A real command line (mypt_lightning.data_prep.cli.run) on a full disk: exit 2, one line."""
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    out = tmp_path / "out" / "dedup.jsonl"
    code = ("import errno, os, runpy, sys\n"
            "real = os.fsync\n"
            "def fsync(fd):\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "os.fsync = fsync\n"
            f"sys.argv = ['deduplicate_episodes.py', '--input', {str(src)!r}, '--output', {str(out)!r}]\n"
            "runpy.run_path('tools/deduplicate_episodes.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"deduplicate_episodes: error: no space left on device writing {out}: "
                                   f"free space or choose another output")
    assert listing(out.parent) == []


def test_gate_report_on_a_full_disk_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """tools/eval_gates.py --report on a full disk: the gate ran, the report cannot be written."""
    from mypt_lightning.gates import cli, runner

    report = runner.EvalReport(phase=1, regression=False, passed=True, gates=[], model="m")
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: None)
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: report)
    out = tmp_path / "gate.json"
    assert cli.main(["--model", "m", "--phase", "1", "--report", str(out)]) == cli.EXIT_PASS
    assert json.loads(out.read_text(encoding="utf-8")) == report.to_dict()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(aw.os, "fsync", fsync)
    assert cli.main(["--model", "m", "--phase", "1", "--report", str(out)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == f"eval_gates.py: error: no space left on device writing {out}: free space or choose another output"
    assert listing(tmp_path) == ["gate.json"]  # the previous report stays, no temp file


def test_run_py_on_a_full_disk_is_one_line_exit_2(tmp_path):
    from mypt_lightning.tokens.tokenizer import get_tokenizer
    from helpers import write_packed_dataset
    from helpers import tiny_overrides

    data = write_packed_dataset(tmp_path / "data", {"train": 8, "val": 2})
    if not (data / "tokenizer_state.json").exists():  # training refuses a dataset that does not name its tokenizer
        aw.write_json(data / "tokenizer_state.json", get_tokenizer().state_dict())
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(data, run_dir, **{"hydra.run.dir": str(tmp_path / "hydra"), "data.num_workers": 0})
    code = ("import errno, os, runpy, sys\n"
            "def fsync(fd):\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "os.fsync = fsync\n"
            f"sys.argv = ['run.py', *{overrides!r}]\n"
            "runpy.run_path('run.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: no space left on device writing {run_dir / 'run_info.json'}: free space or choose another output")
    assert listing(run_dir) == []  # no temp file left in the run directory
