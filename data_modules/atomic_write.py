"""Every output file or folder of the project is written here: complete or not at all.

* :func:`atomic_file` (and :func:`write_bytes_atomic`, :func:`write_text_atomic`,
  :func:`write_json_atomic`): a temp file ``.NAME.tmp-<host>-<pid>-<random>`` beside the
  target, flushed and fsynced, ``os.replace``-d over the target, then the folder fsynced.
* :func:`atomic_directory` (and :func:`make_temp_dir` + :func:`replace_directory` for
  writers that outlive one ``with`` block): a temp folder beside the target; every file in
  it fsynced; swapped in with ``renameat2(RENAME_EXCHANGE)`` where the kernel has it, else
  the old folder is renamed aside (``.NAME.old-...``) and put back if the new one cannot
  take its place; the old one removed.
* On any exception (KeyboardInterrupt included) the temp file or folder is removed and an
  existing target is untouched.
* :func:`remove_stale_temps` removes what a SIGKILLed writer left (its pid no longer runs
  on this host); every write calls it for its own target first. An interrupted
  rename-aside whose target is gone is rolled back instead (the old folder is the last
  complete version).
* ENOSPC / EDQUOT / EROFS / EACCES / EPERM while writing become :class:`OutputWriteError`,
  whose message is one line naming the target and what to do.

Lives in ``data_modules`` (which imports nothing of ``mypt_lightning`` but its special
tokens) so that the dataset writer and everything in ``mypt_lightning`` share it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# A writer on another host cannot be checked for liveness; its leftovers go after a day.
FOREIGN_STALE_AFTER_S = 24 * 3600


class OutputWriteError(OSError):
    """Writing an output failed for a reason the user fixes (full disk, read-only or
    not-writable location, an existing output that is not ours to replace).

    ``str()`` is the one-line message (no ``[Errno N]`` prefix). The command-line entry
    points catch it next to ``UserError`` (it cannot be one: data_modules does not
    import mypt_lightning.errors).
    """

    def __init__(self, code: int, message: str, path: str | os.PathLike | None = None):
        super().__init__(code, message, None if path is None else str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across process pools with the same arguments
        return type(self), (self.errno, self.message, self.filename)


_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def output_error(exc: OSError, target: str | os.PathLike) -> OutputWriteError | None:
    """``exc`` as an OutputWriteError naming ``target``, or None if it is not the user's to fix."""
    if isinstance(exc, OutputWriteError):
        return exc
    code = exc.errno
    if code == errno.ENOSPC:
        msg = f"no space left on device writing {target}: free space or choose another output"
    elif code == errno.EDQUOT:
        msg = f"disk quota exceeded writing {target}: free space or choose another output"
    elif code == errno.EROFS:
        msg = f"read-only file system: {target}: choose an output on a writable file system"
    elif code in (errno.EACCES, errno.EPERM):
        msg = f"permission denied: {target}: choose an output you may write to, or fix its permissions"
    else:
        return None
    return OutputWriteError(code, msg, target)


def _body_error(exc: BaseException, target: Path, temp: Path | None) -> OutputWriteError | None:
    """An OSError raised inside the caller's ``with`` block, translated only when it is about
    the output: a full disk or read-only file system always is; a permission error only when
    it names the temp or the target (not, say, an input file the block was reading)."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in (errno.EACCES, errno.EPERM):
        name = exc.filename
        inside = [str(p) for p in (target, temp) if p is not None]
        if name is None or not any(str(name) == p or str(name).startswith(p + os.sep) for p in inside):
            return None
    return output_error(exc, target)


# ----------------------------------------------------------------------------- temp names

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:32] or "host"


def _stem(name: str) -> str:
    # Keep temp names within NAME_MAX (255) whatever the target's length.
    return "." + name[:180]


def temp_path(target: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh, unused name beside ``target``: ``.NAME.<kind>-<host>-<pid>-<random>``."""
    target = Path(target)
    return target.with_name(f"{_stem(target.name)}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's process) / not a pid we can judge: keep
    return True


def _is_stale(entry: os.DirEntry, suffix: str) -> bool:
    parts = suffix.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        host, pid = parts[0], int(parts[1])
        if host == _HOST:
            return not _pid_alive(pid)
        try:
            return time.time() - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_STALE_AFTER_S
        except OSError:
            return False
    return True  # an older naming scheme (no pid): only a killed writer leaves these


def remove_stale_temps(parent: str | os.PathLike, name: str, extra_kinds: tuple[str, ...] = ()) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` / ``.NAME.old-*`` leftovers of writers of ``parent/NAME`` that
    were killed; returns what was removed. Leftovers of live writers are kept.
    ``extra_kinds``: other :func:`temp_path` kinds a writer of NAME uses (prepare_sft's
    ``scratch``), removed the same way.

    A rename-aside interrupted between its two renames leaves ``.NAME.old-*`` and no NAME:
    that old copy is the last complete version, so it is renamed back instead.
    """
    parent = Path(parent)
    stem = _stem(name)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    olds = []
    for entry in entries:
        if entry.name == f"{stem}.tmp":  # the fixed name earlier versions used
            stale = True
        elif entry.name.startswith(f"{stem}.tmp-"):
            stale = _is_stale(entry, entry.name[len(stem) + 5:])
        elif kind := next((k for k in extra_kinds if entry.name.startswith(f"{stem}.{k}-")), None):
            stale = _is_stale(entry, entry.name[len(stem) + len(kind) + 2:])
        elif entry.name.startswith(f"{stem}.old-"):
            if _is_stale(entry, entry.name[len(stem) + 5:]):
                olds.append(entry)
            continue
        else:
            continue
        if stale and _remove(Path(entry.path)):
            removed.append(Path(entry.path))
    target = parent / name
    for entry in sorted(olds, key=_mtime, reverse=True):
        if not target.exists() and not target.is_symlink():
            try:
                os.rename(entry.path, target)  # roll the interrupted swap back
                continue
            except OSError:
                pass
        if _remove(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def _mtime(entry: os.DirEntry) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _remove(path: Path) -> bool:
    """Remove a file or folder; False if it (or part of it) could not be removed."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- files


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_temp_file(target: Path) -> tuple[Path, int]:
    for _ in range(100):
        tmp = temp_path(target)
        try:
            # 0o666 & ~umask, as a plain open() would create the file (mkstemp would give 0600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            if target.is_file():  # a replaced file keeps its permissions
                os.fchmod(fd, stat.S_IMODE(target.stat().st_mode))
        except OSError:
            pass
        return tmp, fd
    raise FileExistsError(errno.EEXIST, "no free temp name", str(target))


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """``with atomic_file(path) as f: f.write(...)``: ``path`` is the complete new file after
    the block, or unchanged if the block (or the write) raised. ``mode`` is "w" or "wb"."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise OutputWriteError(errno.EISDIR, f"{target} is a directory; give a file name", target)
        remove_stale_temps(target.parent, target.name)
        tmp, fd = _open_temp_file(target)
    except OSError as exc:
        raise (output_error(exc, target) or exc) from None
    try:
        if mode == "wb":
            handle = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
        fsync_dir(target.parent)
    except BaseException as exc:
        if tmp is not None:
            _remove(tmp)
        translated = _body_error(exc, target, tmp)
        if translated is not None:
            raise translated from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8",
                      newline: str | None = None) -> Path:
    with atomic_file(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, *, trailing_newline: bool = True,
                      **dumps_kwargs) -> Path:
    """``json.dumps(payload, **dumps_kwargs)`` (+ a newline) written atomically as UTF-8."""
    dumps_kwargs.setdefault("indent", 2)
    text = json.dumps(payload, **dumps_kwargs) + ("\n" if trailing_newline else "")
    return write_text_atomic(path, text)


def write_json(path: Path, payload: Any) -> None:
    """A JSON file inside a temp folder that :func:`replace_directory` moves into place."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


# ----------------------------------------------------------------------------- directories

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system/kernel cannot exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (bottom-up), so the swap publishes data on disk."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def make_temp_dir(target: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new empty folder ``.NAME.<kind>-<host>-<pid>-<random>`` beside ``target`` (stale
    leftovers of killed writers removed first); created like a plain mkdir (0o777 & ~umask),
    so the published folder has normal permissions."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent, target.name, extra_kinds=(kind,) if kind != "tmp" else ())
        for _ in range(100):
            tmp = temp_path(target, kind)
            try:
                tmp.mkdir()
                return tmp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temp name", str(target))
    except OSError as exc:
        raise (output_error(exc, target) or exc) from None


def replace_directory(tmp_dir: str | os.PathLike, target: str | os.PathLike) -> None:
    """Publish the finished folder ``tmp_dir`` as ``target`` (replacing a folder or file there).

    Readers see the old or the new one, never a mix; if the new one cannot take the old
    one's place, the old one is put back.
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    try:
        _fsync_tree(tmp_dir)
        if not target.exists() and not target.is_symlink():
            os.rename(tmp_dir, target)
            fsync_dir(target.parent)
            return
        if _exchange(tmp_dir, target):
            fsync_dir(target.parent)
            _remove(tmp_dir)  # now holds the old version
            return
        old = temp_path(target, "old")
        os.rename(target, old)
        try:
            os.rename(tmp_dir, target)
        except BaseException:
            os.rename(old, target)
            raise
        fsync_dir(target.parent)
        _remove(old)
    except OSError as exc:
        raise (output_error(exc, target) or exc) from None


move_into_place = replace_directory  # the name data_modules.episode_writer knows


def _check_replaceable(target: Path, replaceable: Callable[[Path], bool] | None, what: str) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and (not any(target.iterdir()) or (replaceable is not None and replaceable(target))):
        return
    raise OutputWriteError(errno.EEXIST, f"{target}: exists and is not {what}; refusing to overwrite it", target)


@contextmanager
def atomic_directory(target: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None,
                     *, what: str = "a previous output of this kind") -> Iterator[Path]:
    """``with atomic_directory(out) as tmp: write files into tmp``: afterwards ``out`` is the
    complete new folder; on an exception it is unchanged and ``tmp`` is gone.

    An existing ``out`` is replaced only if it is empty or ``replaceable(out)`` says it is a
    previous output of the same kind (``what`` names that kind in the refusal); else
    OutputWriteError (EEXIST), before anything is written.
    """
    out = Path(target).absolute()
    if out.parent.is_dir():
        remove_stale_temps(out.parent, out.name)  # first: it may roll an interrupted swap back
    _check_replaceable(out, replaceable, what)
    tmp = make_temp_dir(out)
    try:
        yield tmp
        _check_replaceable(out, replaceable, what)  # the world may have changed meanwhile
        replace_directory(tmp, out)
    except BaseException as exc:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        translated = _body_error(exc, out, tmp)
        if translated is not None:
            raise translated from None
        raise


__all__ = [
    "OutputWriteError", "atomic_directory", "atomic_file", "fsync_dir", "make_temp_dir", "move_into_place",
    "output_error", "remove_stale_temps", "replace_directory", "temp_path", "write_bytes_atomic", "write_json",
    "write_json_atomic", "write_text_atomic",
]
