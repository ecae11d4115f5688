"""Offline provisioning of tiktoken's ``r50k_base`` BPE file (docs/design.md 9).

tiktoken downloads ``r50k_base.tiktoken`` from Azure blob storage on first use and
caches it as ``$TIKTOKEN_CACHE_DIR/<sha1 of the URL>``. Our machines reach PyPI but
not that blob store. The byte-identical file (same sha256 that tiktoken itself
checks) ships as ``whisper/assets/gpt2.tiktoken`` inside the ``openai-whisper``
sdist, so we put it where tiktoken looks and tiktoken never goes to the network:

    source (first that works)                      destination
    --from PATH   (.tiktoken, sdist .tar.gz, .whl) --+
    pip download openai-whisper==20250625 (sdist)  --+--> verify sha256 --> CACHE_DIR/0ea1e91b...
                                                          (temp file + rename)

CACHE_DIR is ``$TIKTOKEN_CACHE_DIR`` when set, else ``~/.cache/mypt_lightning/tiktoken``;
``ensure_tiktoken_env()`` exports the latter for tiktoken when the user set nothing.
``tools/setup_tokenizer.py`` is the command-line face of :func:`setup_tokenizer`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mypt_lightning.errors import UserError

R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
R50K_CACHE_KEY = hashlib.sha1(R50K_URL.encode()).hexdigest()  # tiktoken's file name

WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_MEMBER_SUFFIX = "whisper/assets/gpt2.tiktoken"
SETUP_COMMAND = "python tools/setup_tokenizer.py"
DEFAULT_CACHE_DIR = Path("~/.cache/mypt_lightning/tiktoken")


class TokenizerSetupError(UserError, RuntimeError):
    """The BPE file could not be provisioned; the message is one line saying what to do."""


@dataclass(frozen=True)
class SetupResult:
    path: Path
    source: str  # "cached" when nothing had to be done, else where the bytes came from
    changed: bool


def cache_dir() -> Path:
    """Where tiktoken will look: ``$TIKTOKEN_CACHE_DIR`` if set, else our default."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    if env:
        return Path(env)
    return DEFAULT_CACHE_DIR.expanduser()


def ensure_tiktoken_env() -> Path:
    """Point tiktoken at our cache dir unless the user chose one; returns the dir.

    Must run before the first ``tiktoken.get_encoding("r50k_base")`` of the process.
    """
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        os.environ["TIKTOKEN_CACHE_DIR"] = str(DEFAULT_CACHE_DIR.expanduser())
    return Path(os.environ["TIKTOKEN_CACHE_DIR"])


def bpe_cache_path(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory) / R50K_CACHE_KEY if directory is not None else cache_dir() / R50K_CACHE_KEY


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_installed(directory: str | os.PathLike | None = None) -> bool:
    """True when the cached BPE file exists and has the expected sha256."""
    path = bpe_cache_path(directory)
    try:
        return sha256_bytes(path.read_bytes()) == R50K_SHA256
    except OSError:
        return False


def read_bpe_from(path: str | os.PathLike) -> bytes:
    """The r50k BPE bytes from a ``.tiktoken`` file, a whisper sdist (.tar.gz) or wheel/zip.

    Raises TokenizerSetupError when the file is unreadable, holds no gpt2.tiktoken,
    or the bytes do not have r50k_base's sha256.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TokenizerSetupError(f"--from {path}: no such file")
    try:
        if tarfile.is_tarfile(path):
            data = _member_from_tar(path)
        elif zipfile.is_zipfile(path):
            data = _member_from_zip(path)
        else:
            data = path.read_bytes()
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise TokenizerSetupError(f"cannot read {path}: {exc}") from None
    if data is None:
        raise TokenizerSetupError(f"{path} holds no {WHISPER_MEMBER_SUFFIX}")
    digest = sha256_bytes(data)
    if digest != R50K_SHA256:
        raise TokenizerSetupError(
            f"{path}: sha256 {digest[:12]}... is not r50k_base's {R50K_SHA256[:12]}..."
        )
    return data


def _member_from_tar(path: Path) -> bytes | None:
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(WHISPER_MEMBER_SUFFIX):
                f = tar.extractfile(member)
                return f.read() if f is not None else None
    return None


def _member_from_zip(path: Path) -> bytes | None:
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith(WHISPER_MEMBER_SUFFIX):
                return zf.read(name)
    return None


def write_atomic(data: bytes, dest: Path) -> None:
    """Write ``dest`` whole or not at all (data_modules.atomic_write); a full disk or a
    read-only cache folder is a TokenizerSetupError naming it."""
    from data_modules.atomic_write import OutputWriteError, write_bytes_atomic

    try:
        write_bytes_atomic(dest, data)
    except OutputWriteError as exc:
        raise TokenizerSetupError(f"{exc} (or set TIKTOKEN_CACHE_DIR to a writable folder)") from None


def download_whisper_sdist(into: Path, timeout: float = 300.0) -> Path:
    """``pip download`` the openai-whisper sdist (~0.8 MB, no dependencies) into ``into``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", WHISPER_SDIST, "-d", str(into),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TokenizerSetupError(f"pip download {WHISPER_SDIST} failed: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        why = last[-1] if last else f"exit {proc.returncode}"
        raise TokenizerSetupError(f"pip download {WHISPER_SDIST} failed: {why}")
    found = sorted(into.glob("openai_whisper-*.tar.gz")) + sorted(into.glob("openai-whisper-*.tar.gz"))
    if not found:
        raise TokenizerSetupError(f"pip download {WHISPER_SDIST} produced no sdist in {into}")
    return found[0]


def setup_tokenizer(
    from_path: str | os.PathLike | None = None,
    *,
    directory: str | os.PathLike | None = None,
    allow_download: bool = True,
    downloader=download_whisper_sdist,
) -> SetupResult:
    """Make ``r50k_base`` loadable offline; a no-op when the cached file is already right.

    Tries ``from_path`` first, then (if allowed) a pip download of the whisper sdist.
    Raises TokenizerSetupError with a one-line message naming what is missing.
    """
    dest = bpe_cache_path(directory)
    if is_installed(dest.parent):
        return SetupResult(dest, "cached", False)

    problems: list[str] = []
    if from_path is not None:
        try:
            data = read_bpe_from(from_path)
            write_atomic(data, dest)
            return SetupResult(dest, str(from_path), True)
        except TokenizerSetupError as exc:
            problems.append(str(exc))
    if allow_download:
        try:
            with tempfile.TemporaryDirectory(prefix="mypt_whisper_") as tmp:
                sdist = downloader(Path(tmp))
                data = read_bpe_from(sdist)
                write_atomic(data, dest)
            return SetupResult(dest, f"pip download {WHISPER_SDIST}", True)
        except TokenizerSetupError as exc:
            problems.append(str(exc))
    tried = "; ".join(problems) if problems else "no source tried (--no-download and no --from)"
    raise TokenizerSetupError(
        f"r50k_base BPE file missing at {dest} ({tried}); provide it with "
        f"'{SETUP_COMMAND} --from PATH' (gpt2.tiktoken, r50k_base.tiktoken or an "
        f"openai-whisper sdist/wheel) or allow PyPI access for 'pip download {WHISPER_SDIST}'"
    )


def missing_message(directory: str | os.PathLike | None = None) -> str:
    """One line saying the BPE file is missing and which command provides it."""
    return (
        f"tiktoken r50k_base BPE file not found at {bpe_cache_path(directory)}; "
        f"run '{SETUP_COMMAND}' (offline: '{SETUP_COMMAND} --from PATH/TO/gpt2.tiktoken')"
    )


__all__ = [
    "R50K_URL", "R50K_SHA256", "R50K_CACHE_KEY", "SETUP_COMMAND", "WHISPER_SDIST",
    "TokenizerSetupError", "SetupResult", "cache_dir", "ensure_tiktoken_env", "bpe_cache_path",
    "is_installed", "read_bpe_from", "write_atomic", "download_whisper_sdist",
    "setup_tokenizer", "missing_message",
]
