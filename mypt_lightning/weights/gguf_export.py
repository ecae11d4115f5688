"""GGUF for llama.cpp, made by llama.cpp's own converter from our transformers export.

    checkpoint --export_hf--> temp HF folder --convert_hf_to_gguf.py--> FILE.gguf (atomic)

The converter is not on PyPI as a program; it ships, with the ``conversion`` package and
the ``gguf-py`` it is written against, inside the ``llama-cpp-python`` sdist
(``vendor/llama.cpp/``). :func:`find_converter` looks, in order, at

    --llama_cpp PATH         a llama.cpp checkout, a folder with convert_hf_to_gguf.py,
                             or a llama-cpp-python sdist (.tar.gz)
    $MYPT_LLAMA_CPP          the same
    ~/.cache/mypt_lightning/llama.cpp/<version>/   filled from the sdist on first use
                             (pip download of the installed llama-cpp-python version)

and runs it with this Python (it needs torch, numpy, transformers, sentencepiece).
:func:`llama_cpp_greedy` decodes a GGUF with ``llama-cpp-python``; :func:`compare_greedy`
checks that llama.cpp picks the same greedy tokens as ``generation.generate`` and, where it
does not, reports both logit gaps at the first difference (a near-tie, or a real bug).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mypt_lightning.errors import UserError

CONVERTER = "convert_hf_to_gguf.py"
SDIST_PREFIX = "vendor/llama.cpp/"
_NEEDED = (CONVERTER, "conversion/", "gguf-py/", "LICENSE")  # what the converter imports / its licence
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
ENV_VAR = "MYPT_LLAMA_CPP"


class GGUFExportError(UserError):
    """The converter could not be found or failed; the message says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "mypt_lightning" / "llama.cpp"


def installed_llama_cpp_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # not installed
        return None


def _converter_in(folder: Path) -> Path | None:
    for candidate in (folder / CONVERTER, folder / SDIST_PREFIX / CONVERTER):
        if candidate.is_file():
            return candidate
    return None


def extract_converter(sdist: Path, dest: Path) -> Path:
    """Copy the converter files out of a llama-cpp-python sdist into ``dest`` (whole or not at all)."""
    try:
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                top, _, rest = m.name.partition("/")  # llama_cpp_python-X.Y.Z/vendor/llama.cpp/...
                if not rest.startswith(SDIST_PREFIX):
                    continue
                rel = rest[len(SDIST_PREFIX):]
                if any(rel == n or (n.endswith("/") and rel.startswith(n)) for n in _NEEDED) and (m.isfile() or m.isdir()):
                    if ".." in Path(rel).parts:
                        raise GGUFExportError(f"{sdist}: member {m.name!r} leaves the archive")
                    members.append((m, rel))
            if not any(rel == CONVERTER for _, rel in members):
                raise GGUFExportError(f"{sdist}: no {SDIST_PREFIX}{CONVERTER} inside (not a llama-cpp-python sdist?)")
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_mkdir(dest.parent)))
            try:
                for m, rel in members:
                    target = tmp / rel
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(m) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (OSError, tarfile.TarError) as exc:
        raise GGUFExportError(f"cannot read {sdist}: {exc}") from None
    return dest / CONVERTER


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def download_converter(version: str | None, dest: Path, timeout: float = 600.0) -> Path:
    """``pip download`` the llama-cpp-python sdist (no build) and extract the converter into ``dest``."""
    spec = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    with tempfile.TemporaryDirectory(prefix="mypt_llamacpp_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "llama-cpp-python",
               spec, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GGUFExportError(f"pip download {spec} failed: {exc}; pass --llama_cpp PATH") from None
        found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr or proc.stdout).strip().splitlines()
            raise GGUFExportError(f"pip download {spec} failed: {last[-1] if last else proc.returncode}; "
                                  "pass --llama_cpp PATH (a llama.cpp checkout or the sdist)")
        return extract_converter(found[0], dest)


def find_converter(explicit: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """Path of convert_hf_to_gguf.py (see the module docstring for the search order)."""
    for source, value in (("--llama_cpp", explicit), (f"${ENV_VAR}", os.environ.get(ENV_VAR))):
        if not value:
            continue
        path = Path(value).expanduser()
        if path.is_file() and path.name == CONVERTER:
            return path
        if path.is_dir() and (found := _converter_in(path)):
            return found
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            version = path.name.removeprefix("llama_cpp_python-").removesuffix(".tar.gz")
            cached = cache_root() / version
            return _converter_in(cached) or extract_converter(path, cached)
        raise GGUFExportError(f"{source} {path}: neither {CONVERTER}, a folder holding it, nor a "
                              "llama-cpp-python sdist (.tar.gz)")
    version = installed_llama_cpp_version()
    cached = cache_root() / (version or "latest")
    if (found := _converter_in(cached)):
        return found
    if not allow_download:
        raise GGUFExportError(f"llama.cpp's {CONVERTER} not found (looked in {cached}); pass --llama_cpp PATH")
    return download_converter(version, cached)


def _check_converter_needs() -> None:
    missing = []
    for module in ("sentencepiece", "numpy", "transformers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:  # the converter imports them unconditionally on the Llama path
        raise GGUFExportError(f"llama.cpp's converter needs {', '.join(missing)}: pip install {' '.join(missing)}")


def run_converter(converter: Path, hf_dir: Path, outfile: Path, outtype: str) -> None:
    """Run convert_hf_to_gguf.py; a failure is a GGUFExportError quoting its last lines."""
    if outtype not in OUTTYPES:
        raise GGUFExportError(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    _check_converter_needs()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use its own gguf-py
    env.pop("PYTHONPATH", None)  # the converter imports its own packages, not this checkout
    cmd = [sys.executable, str(converter), str(hf_dir), "--outfile", str(outfile), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(converter.parent))
    if proc.returncode != 0 or not outfile.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise GGUFExportError(f"{converter} failed (exit {proc.returncode}): {tail}")


def export_gguf(checkpoint: str | os.PathLike, output: str | os.PathLike, *, outtype: str = "f32",
                drop_lm_head_bias: bool = False, llama_cpp: str | os.PathLike | None = None,
                allow_download: bool = True):
    """Write ``output`` (a .gguf) from any checkpoint load_model reads. Returns the LogitShift
    when a legacy lm_head bias was dropped, else None. The file appears whole or not at all."""
    from data_modules.atomic_write import fsync_dir, output_error, temp_path
    from mypt_lightning.weights.hf_export import export_hf

    output = Path(output)
    if output.is_dir():
        raise GGUFExportError(f"--output {output}: is a folder; give a file name such as model.gguf")
    if outtype not in OUTTYPES:
        raise GGUFExportError(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    converter = find_converter(llama_cpp, allow_download=allow_download)
    with tempfile.TemporaryDirectory(prefix="mypt_gguf_") as tmp:
        shift = export_hf(checkpoint, Path(tmp) / "hf", drop_lm_head_bias=drop_lm_head_bias)
        partial = temp_path(output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            run_converter(converter, Path(tmp) / "hf", partial, outtype)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, output)
            fsync_dir(output.parent)
        except OSError as exc:
            err = output_error(exc, output)  # full disk, read-only place: one line
            if err is not None:
                raise err from None
            raise
        finally:
            if partial.exists():
                partial.unlink()
    return shift


def llama_cpp_greedy(gguf_path: str | os.PathLike, prompts: list[list[int]], max_new_tokens: int = 32,
                     n_threads: int = 2, *, keep_logits: bool = False):
    """Greedy tokens llama.cpp (llama-cpp-python) picks after each prompt: argmax of its
    logits, the embedding padding rows excluded as generation.generate does, no stop tokens.
    With ``keep_logits`` each prompt gives (tokens, float32 array (steps, 50276) of the
    logits each token was picked from)."""
    import numpy as np
    from llama_cpp import Llama

    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

    n_ctx = max(len(p) for p in prompts) + max_new_tokens
    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, logits_all=True,
                verbose=False)
    out = []
    try:
        for prompt in prompts:
            llm.reset()
            llm.eval(list(prompt))
            tokens, rows = [], []
            for _ in range(max_new_tokens):
                logits = np.array(llm.scores[llm.n_tokens - 1, :TOKENIZER_VOCAB_SIZE], dtype=np.float32)
                token = int(logits.argmax())
                tokens.append(token)
                if keep_logits:
                    rows.append(logits)
                llm.eval([token])
            out.append((tokens, np.stack(rows)) if keep_logits else tokens)
    finally:
        if hasattr(llm, "close"):  # frees the model now (older versions free it on garbage collection)
            llm.close()
    return out


@dataclass(frozen=True)
class GreedyAgreement:
    """How one prompt's greedy continuation from llama.cpp compares with ours.

    ``agree``: leading tokens that are equal (``n`` when all are). At the first difference,
    ours picked ``ours`` and llama.cpp ``theirs``; ``our_gap`` is how far our logit of
    ``ours`` lies above our logit of ``theirs`` (our top-1 minus top-2 margin when ``theirs``
    is our runner-up), ``their_gap`` the same for llama.cpp the other way round. Both small:
    a near-tie that rounding decides; a large gap means the two models really differ."""

    agree: int
    n: int
    ours: int | None = None
    theirs: int | None = None
    our_gap: float | None = None
    their_gap: float | None = None
    our_top2_margin: float | None = None

    @property
    def identical(self) -> bool:
        return self.agree == self.n

    def describe(self) -> str:
        if self.identical:
            return f"{self.agree}/{self.n} tokens equal"
        return (f"{self.agree}/{self.n} tokens equal; at token {self.agree} ours picks {self.ours} and llama.cpp "
                f"{self.theirs}: our logit gap {self.our_gap:.4g} (our top-2 margin {self.our_top2_margin:.4g}), "
                f"llama.cpp's {self.their_gap:.4g}")


def compare_greedy(model, gguf_path: str | os.PathLike, prompts: list[list[int]], ours: list[list[int]],
                   n_threads: int = 2) -> list[GreedyAgreement]:
    """llama.cpp's greedy tokens on ``gguf_path`` against ``ours``, the greedy tokens
    ``generation.generate`` gave ``model`` after each prompt (no stop tokens; the caller runs
    it, as this layer sits below inference). One GreedyAgreement per prompt, with the logit
    gaps at the first difference."""
    import torch

    from mypt_lightning.tokens.special_tokens import TOKENIZER_VOCAB_SIZE

    n = max(len(m) for m in ours)
    theirs_all = llama_cpp_greedy(gguf_path, prompts, n, n_threads, keep_logits=True)
    out = []
    for prompt, mine, (theirs, their_logits) in zip(prompts, ours, theirs_all, strict=True):
        k = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
        if k is None:
            out.append(GreedyAgreement(min(len(mine), n), n))
            continue
        with torch.inference_mode():
            logits = model(torch.tensor([list(prompt) + list(mine[:k])]))[0, -1, :TOKENIZER_VOCAB_SIZE].float()
        a, b = mine[k], theirs[k]
        top2 = logits.topk(2).values
        out.append(GreedyAgreement(k, n, a, b, float(logits[a] - logits[b]),
                                   float(their_logits[k][b] - their_logits[k][a]), float(top2[0] - top2[1])))
    return out


__all__ = ["export_gguf", "find_converter", "extract_converter", "run_converter", "llama_cpp_greedy",
           "compare_greedy", "GreedyAgreement", "GGUFExportError", "OUTTYPES"]
