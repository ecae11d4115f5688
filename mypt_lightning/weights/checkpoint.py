"""Model weights in and out: the three on-disk formats, one loader.

Formats ``load_weights`` / ``load_model`` accept (detected from what is at the path):

(a) Lightning checkpoint file (``*.ckpt``): a torch pickle with ``state_dict`` (model keys
    prefixed ``model.``; optimizer, metric and other prefixes are ignored) and the model
    config dict under ``mypt_model_config``.
(a') Lightning *sharded* checkpoint folder (``trainer=fsdp``, ``state_dict_type=sharded``):
    ``.metadata`` + ``__<rank>_0.distcp`` files (torch.distributed.checkpoint) holding the
    ``model.``-prefixed weights under ``model``, and ``meta.pt`` with the rest (the model
    config under ``mypt_model_config``). Read in one process, whatever the world size
    that wrote it.
(b) Our export folder (``save_exported``)::

        OUT/model.safetensors   our state-dict names; a tied lm_head.weight stored once (as embed.weight)
        OUT/config.json         {"format": "mypt-lightning", "format_version": 1,
                                 "model": MyPTConfig.to_dict(), "extra": {...}}

(b') A transformers ``LlamaForCausalLM`` folder (``config.json`` with ``model_type: llama``,
    ``model.safetensors`` or a sharded ``model.safetensors.index.json``) whose shapes fit MyPT
    (no GQA, tied or untied head): ours from ``tools/export_hf.py`` or one shared in HF format
    (read by ``hf_import.py``; export -> import -> export is identical bit for bit).
(c) Legacy MyPT checkpoint folder: ``model.pt`` (a state_dict, maybe wrapped under
    "model"/"state_dict", maybe "_orig_mod."/"module." prefixed, maybe bf16) and
    ``config.json`` (architecture plus training fields). Legacy names map as::

        token_embedding_table   -> embed            blocks.N.ln1  -> blocks.N.attn_norm
        blocks.N.sa.qkv         -> blocks.N.attn.qkv   blocks.N.ln2  -> blocks.N.mlp_norm
        blocks.N.sa.proj        -> blocks.N.attn.proj  ln_f          -> norm_f
        blocks.N.fwd.w_gate|w_up|w_down -> blocks.N.mlp.w_gate|w_up|w_down
        lm_head (weight tied to the embedding, plus a bias vector: kept, lm_head_bias=True)

Every problem raises ``CheckpointError`` (or its subclass ``ArchitectureMismatchError``)
with a one-line message that names the path and what is wrong.

No checkpoint can run code. Pickles (``.ckpt``, ``meta.pt``, ``model.pt``) are read only by
:func:`_torch_load`, with ``torch.load(weights_only=True)`` (tensors, numbers, strings, plain
containers); a sharded folder's ``.metadata`` (a plain pickle, which torch.distributed.checkpoint
would unpickle unrestricted) only by :func:`_read_dcp_metadata`, which admits the few DCP
metadata classes. Anything else is refused with a CheckpointError naming the file and the
refused global. Lightning's own resume (``ckpt_path``) is checked with
:func:`check_resumable` first and then runs with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from data_modules.atomic_write import OutputWriteError, atomic_directory
from mypt_lightning.errors import UserError
from mypt_lightning.model import ARCHITECTURE_FIELDS, MyPT, MyPTConfig

EXPORT_FORMAT = "mypt-lightning"
EXPORT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LEGACY_WEIGHTS_FILE = "model.pt"
LIGHTNING_CONFIG_KEY = "mypt_model_config"
SHARDED_METADATA_FILE = "meta.pt"  # Lightning's name for the non-tensor part of a sharded checkpoint
EXPECTED_FORMATS = (
    "a Lightning checkpoint file (.ckpt with 'state_dict' and 'mypt_model_config'), "
    "a Lightning sharded checkpoint folder (.metadata + *.distcp + meta.pt), "
    f"an exported folder ({WEIGHTS_FILE} + {CONFIG_FILE}), "
    "a transformers LlamaForCausalLM folder (config.json with model_type 'llama' + safetensors) "
    f"or a legacy MyPT folder ({LEGACY_WEIGHTS_FILE} + {CONFIG_FILE})"
)

# Wrapper prefixes that torch.compile / DDP / FSDP / checkpoint wrappers put into names.
_WRAPPER_PARTS = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_LEGACY_RENAMES = (
    (r"^token_embedding_table\.", "embed."),
    (r"^blocks\.(\d+)\.sa\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^blocks\.(\d+)\.sa\.proj\.", r"blocks.\1.attn.proj."),
    (r"^blocks\.(\d+)\.fwd\.(w_gate|w_up|w_down)\.", r"blocks.\1.mlp.\2."),
    (r"^blocks\.(\d+)\.ln1\.", r"blocks.\1.attn_norm."),
    (r"^blocks\.(\d+)\.ln2\.", r"blocks.\1.mlp_norm."),
    (r"^ln_f\.", "norm_f."),
    (r"^lm_head\.", "lm_head."),
)
# Legacy config.json fields we take (everything else there is training state and ignored).
_LEGACY_CONFIG_FIELDS = ("vocab_size", "n_embd", "n_head", "n_layer", "block_size", "bias", "tie_weights",
                         "rope_theta", "rope_scale", "norm_eps")
_LEGACY_REQUIRED = {"pos_encoding": "rope", "mlp_type": "swiglu", "norm_type": "rmsnorm"}


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or that does not fit what was asked for."""


class ArchitectureMismatchError(CheckpointError):
    """The weights were made for a different architecture than the one expected."""


def check_architecture(found: MyPTConfig, expected: MyPTConfig, source: str) -> None:
    """Raise ArchitectureMismatchError naming every differing ARCHITECTURE_FIELDS entry."""
    diffs = [(name, _arch_value(found, name), _arch_value(expected, name)) for name in ARCHITECTURE_FIELDS]
    diffs = [d for d in diffs if d[1] != d[2]]
    if diffs:
        lines = "; ".join(f"{n}: checkpoint has {a!r}, expected {b!r}" for n, a, b in diffs)
        raise ArchitectureMismatchError(f"{source}: architecture mismatch in {len(diffs)} field(s): {lines}")


def _arch_value(config: MyPTConfig, name: str):
    return config.hidden_dim if name == "mlp_hidden" else getattr(config, name)


# Config fields that shape what the weights compute but are not weights themselves: a run may set
# them differently from the checkpoint it starts from (phase 1b's context extension changes
# block_size and rope_scale); each difference is reported.
NON_WEIGHT_FIELDS = ("block_size", "rope_scale", "rope_theta", "norm_eps")
# Architecture fields a run takes from the checkpoint it starts from, whatever its config says:
# a legacy MyPT head has a bias vector that our configs do not ask for.
CHECKPOINT_FIELDS = ("lm_head_bias",)


def fit_config_to_checkpoint(found: MyPTConfig, wanted: MyPTConfig, source: str
                             ) -> tuple[MyPTConfig, list[str], list[str]]:
    """The config a run with config ``wanted`` trains with when it starts from weights whose
    config is ``found``: CHECKPOINT_FIELDS from the checkpoint, everything else from ``wanted``.

    Returns ``(config, changed, taken)``: ``changed`` names each NON_WEIGHT_FIELDS difference
    ("rope_scale 1.0 -> 4.0"), ``taken`` each field taken from the checkpoint. Any other
    architecture difference raises ArchitectureMismatchError (check_architecture).

    >>> base = MyPTConfig.tiny(block_size=64, lm_head_bias=True)
    >>> config, changed, taken = fit_config_to_checkpoint(base, MyPTConfig.tiny(block_size=128, rope_scale=2.0), "base")
    >>> config.block_size, config.rope_scale, config.lm_head_bias
    (128, 2.0, True)
    >>> changed, taken
    (['block_size 64 -> 128', 'rope_scale 1.0 -> 2.0'], ['lm_head_bias=True'])
    """
    fitted = dataclasses.replace(wanted, **{f: getattr(found, f) for f in CHECKPOINT_FIELDS})
    check_architecture(found, fitted, source)
    changed = [f"{f} {getattr(found, f)!r} -> {getattr(wanted, f)!r}"
               for f in NON_WEIGHT_FIELDS if getattr(found, f) != getattr(wanted, f)]
    taken = [f"{f}={getattr(found, f)!r}" for f in CHECKPOINT_FIELDS if getattr(found, f) != getattr(wanted, f)]
    return fitted, changed, taken


# ----------------------------------------------------------------------------- loading


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], MyPTConfig]:
    """(state_dict in our names, float32 on CPU, as ``MyPT.state_dict()`` has it; config of the weights).

    A tied ``lm_head.weight`` is present and is the same tensor as ``embed.weight``, so
    ``model.load_state_dict(sd, strict=True)`` works.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "lightning":
        sd, config = _read_lightning(path)
    elif kind == "lightning-sharded":
        sd, config = _read_lightning_sharded(path)
    elif kind == "exported":
        sd, config = _read_exported(path)
    elif kind == "hf-llama":
        sd, config = _read_hf_llama(path)
    else:
        sd, config = _read_legacy(path)
    return _validated(sd, config, path), config


def load_model(
    path: str | os.PathLike,
    config_overrides: dict | None = None,
    expected_config: MyPTConfig | None = None,
) -> MyPT:
    """The model at ``path`` in eval mode, on CPU, float32.

    config_overrides change non-architecture fields (rope_scale, block_size, attn_impl, ...);
    overriding an architecture field to a different value is an error. expected_config:
    refuse weights whose architecture differs (every differing field is named).
    """
    sd, config = load_weights(path)
    if config_overrides:
        try:
            wanted = MyPTConfig.from_dict({**config.to_dict(), **config_overrides})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad config_overrides: {e}") from None
        changed = [k for k in ARCHITECTURE_FIELDS if _arch_value(wanted, k) != _arch_value(config, k)]
        if changed:
            raise ArchitectureMismatchError(
                f"{path}: config_overrides change architecture field(s) {changed}; the weights fix those")
        config = wanted
    if expected_config is not None:
        check_architecture(config, expected_config, str(path))
    try:
        model = MyPT(config)
    except (RuntimeError, MemoryError) as e:  # e.g. a block_size far too large for the RoPE tables
        raise CheckpointError(f"{path}: cannot build the model of its config (block_size={config.block_size}): "
                              f"{type(e).__name__}: {_one_line(e, 200)}") from None
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


def read_config(path: str | os.PathLike) -> MyPTConfig:
    """The model config of the checkpoint at ``path`` (any format), reading as little as it
    can: tensors are mapped, not read (a legacy folder's config needs its weights' names and
    shapes). The weights are checked against it when they are loaded."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "lightning":
        return _read_lightning(path, mmap=True)[1]
    if kind == "lightning-sharded":
        return _sharded_config(path)
    if kind == "exported":
        return _exported_config(path)
    if kind == "hf-llama":
        return _read_hf_llama(path)[1]
    return _read_legacy(path, mmap=True)[1]


def detect_format(path: Path) -> str:
    """'lightning' | 'lightning-sharded' | 'exported' | 'hf-llama' | 'legacy', or CheckpointError
    saying what was expected."""
    if not path.exists():
        raise CheckpointError(f"{path}: does not exist; expected {EXPECTED_FORMATS}")
    if path.is_file():
        return "lightning"
    if (path / ".metadata").is_file() and (path / SHARDED_METADATA_FILE).is_file():
        return "lightning-sharded"
    if (path / CONFIG_FILE).is_file() and _hf_llama_folder(path):
        return "hf-llama"
    if (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file():
        return "exported"
    if (path / LEGACY_WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file():
        return "legacy"
    present = sorted(p.name for p in path.iterdir())[:20]
    raise CheckpointError(f"{path}: directory is none of the known formats (it holds {present}); "
                          f"expected {EXPECTED_FORMATS}")


def _hf_llama_folder(path: Path) -> bool:
    """A transformers Llama folder? (an unreadable config.json is left to the other readers to name)"""
    from mypt_lightning.weights.hf_import import is_hf_llama

    try:
        return is_hf_llama(path, _read_json(path / CONFIG_FILE))
    except CheckpointError:
        return False


def _read_hf_llama(path: Path):
    from mypt_lightning.weights.hf_import import read_hf_llama

    return read_hf_llama(path, _read_json(path / CONFIG_FILE))


def _read_json(path: Path) -> dict:
    from mypt_lightning.jsonio import loads_strict

    try:
        data = loads_strict(path.read_bytes(), where=str(path))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read JSON: {_one_line(e)}") from None
    except UserError as e:  # the strict parser's EpisodeError: deep nesting, huge ints, duplicate keys...
        reason = getattr(e, "reason", str(e)).removeprefix("invalid JSON: ")
        raise CheckpointError(f"{path}: cannot read JSON: {reason}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _config_from(d, source: str) -> MyPTConfig:
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: model config is {type(d).__name__}, expected a dict")
    try:
        return MyPTConfig.from_dict(dict(d))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model config: {e}") from None


def _one_line(e: BaseException | str, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Types admitted beyond torch's own weights_only allow-list (tensors, storages, OrderedDict,
# numbers, strings, plain containers). That list already covers every checkpoint this project
# writes (checked on the .ckpt of a CPU run and the meta.pt of a 2-rank FSDP sharded folder:
# hyper-parameters are plain dicts, our RNG capture stores tensors and plain values), so
# nothing is added. Add a type only with such evidence: each one is code a checkpoint may call.
SAFE_GLOBALS: tuple = ()

_RESAVE_HINT = ("re-save it where you trust it with tensors and plain values only (e.g. torch.save({'state_dict': "
                "model.state_dict(), 'mypt_model_config': model.config.to_dict()}, PATH) or "
                "mypt_lightning.weights.checkpoint.save_exported(model, DIR))")


@contextmanager
def trusted_types() -> Iterator[None]:
    """The allow-list in effect: wrap any ``torch.load(weights_only=True)`` of a checkpoint
    that is not ours to call (Lightning's resume) so it admits exactly what ours does."""
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        yield


def _torch_load(source: Path | io.BytesIO, where: str | Path | None = None, mmap: bool = False):
    """The one ``torch.load`` of checkpoints in the project: weights_only=True, on CPU.

    ``mmap``: map tensors instead of reading them (a check that the pickle is safe costs
    no memory). A pickle that needs any other global is refused, naming it.
    """
    where = where if where is not None else source
    if mmap and not (isinstance(source, Path) and zipfile.is_zipfile(source)):
        mmap = False  # only the zip format (torch >= 1.6) can be mapped
    try:
        with trusted_types(), warnings.catch_warnings():
            # torch warns before refusing a plain pickle of protocol > 2; the error below says it in one line
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint")
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        refused = _refused_globals(source, e)
        if refused:
            raise CheckpointError(
                f"{where}: refused: this checkpoint contains Python objects other than tensors and plain "
                f"values ({refused}); unpickling it could run code, so it is not loaded. "
                f"If you made it yourself, {_RESAVE_HINT}") from None
        raise CheckpointError(f"{where}: not a readable torch checkpoint: {_weights_only_detail(e)}") from None
    except Exception as e:  # torch raises many types (RuntimeError, EOFError, ValueError...)
        raise CheckpointError(f"{where}: not a readable torch checkpoint: {type(e).__name__}: {_one_line(e)}") from None


def _refused_globals(source, error: Exception) -> str | None:
    """'refused global(s) X, Y' for the globals the file asks for that are not allowed (read
    from its pickle, not run), or None if the failure is not a refused global (a damaged file)."""
    names: list[str] = []
    if isinstance(source, Path) and zipfile.is_zipfile(source):
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(source))
        except Exception:  # a damaged file: fall back to torch's message
            names = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
        names = [n for n in names if n not in allowed]
    text = str(error)
    names += re.findall(r"GLOBAL ([\w.]+)", text)
    if not names:
        built = re.search(r"Can only build .*?but got (<class '[\w.]+'>)", text)
        names = [built.group(1)] if built else []
    if not names:
        return None
    names = list(dict.fromkeys(names))
    return "refused global" + ("s " if len(names) > 1 else " ") + ", ".join(names)


def _weights_only_detail(error: Exception) -> str:
    """The line of torch's weights_only message that says what went wrong (not its boilerplate)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    detail = [ln for ln in lines[1:] if not ln.startswith(("Check the documentation", "Please file an issue"))]
    return "UnpicklingError: " + _one_line(detail[0] if detail else (lines[0] if lines else "damaged pickle"), 200)


# ----------------------------------------------------------------------------- sharded folders

# What a torch.distributed.checkpoint ``.metadata`` pickle holds (checked on a 2-rank FSDP
# checkpoint): DCP's metadata dataclasses, torch.Size, dtypes and layouts, and the Path of
# the folder it was saved to.
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_DCP_METADATA_GLOBALS = {
    *((_DCP_METADATA, n) for n in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                   "ChunkStorageMetadata", "TensorProperties", "StorageMeta", "MetadataIndex",
                                   "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
    *((m, n) for m in ("pathlib", "pathlib._local") for n in ("PosixPath", "PurePosixPath", "WindowsPath",
                                                              "PureWindowsPath")),
}


class _DCPMetadataUnpickler(pickle.Unpickler):
    """A pickle reader that can construct only the DCP metadata classes (and dtypes)."""

    def find_class(self, module, name):
        if (module, name) in _DCP_METADATA_GLOBALS or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _read_dcp_metadata(folder: Path, file: Path | None = None):
    """A sharded folder's ``.metadata``, read so that it cannot run code; every storage file
    it names must be a plain file name inside ``folder``."""
    from torch.distributed.checkpoint.metadata import Metadata

    file = file or folder / ".metadata"
    try:
        with open(file, "rb") as f:
            metadata = _DCPMetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused global"):
            raise CheckpointError(
                f"{file}: refused: this sharded checkpoint's metadata contains Python objects other than "
                f"torch.distributed.checkpoint metadata ({e}); unpickling it could run code, so it is not "
                f"loaded") from None
        raise CheckpointError(f"{file}: cannot read: UnpicklingError: {_one_line(e)}") from None
    except Exception as e:  # truncated or garbage files raise EOFError, ValueError, ...
        raise CheckpointError(f"{file}: cannot read: {type(e).__name__}: {_one_line(e)}") from None
    if not isinstance(metadata, Metadata) or not isinstance(getattr(metadata, "storage_data", None), dict):
        raise CheckpointError(f"{file}: cannot read: not torch.distributed.checkpoint metadata")
    for info in metadata.storage_data.values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str) or not rel or "/" in rel or "\\" in rel or rel in (".", ".."):
            raise CheckpointError(f"{file}: cannot read: storage file {rel!r} is not a file name inside {folder}")
    return metadata


def _safe_dcp_reader(folder: Path):
    """A ``FileSystemReader`` for ``folder`` whose metadata read is :func:`_read_dcp_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class _Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            rank = kwargs.get("rank")
            name = ".metadata" if rank is None else f"__{rank}.metadata"
            metadata = _read_dcp_metadata(folder, folder / name)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return _Reader(str(folder))


def _check_sharded(path: Path):
    """Every pickle of a sharded folder, read safely: ``meta.pt``, ``.metadata`` and each
    non-tensor item in the ``.distcp`` files (DCP itself would unpickle those unrestricted,
    as Lightning's resume does for the optimizer's param_groups). Returns (meta, metadata)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    meta = _torch_load(path / SHARDED_METADATA_FILE, mmap=True)
    metadata = _read_dcp_metadata(path)
    byte_keys = {k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    for index, info in metadata.storage_data.items():
        if getattr(index, "fqn", None) not in byte_keys:
            continue
        file = path / info.relative_path
        if info.transform_descriptors:
            raise CheckpointError(f"{file}: item {index.fqn!r} is stored with transforms "
                                  f"{list(info.transform_descriptors)}, which this loader does not read")
        try:
            with open(file, "rb") as f:
                f.seek(int(info.offset))
                data = f.read(int(info.length))
        except (OSError, TypeError, ValueError) as e:
            raise CheckpointError(f"{file}: cannot read item {index.fqn!r}: {_one_line(e)}") from None
        _torch_load(io.BytesIO(data), where=f"{file} (item {index.fqn!r})")
    return meta, metadata


def check_loadable(path: str | os.PathLike) -> str:
    """Check, cheaply and without running anything in it, that the checkpoint at ``path``
    holds no pickled code (tensors are mapped, not read). Returns its format; raises
    CheckpointError otherwise. An exported folder holds no pickle at all."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "lightning":
        _torch_load(path, mmap=True)
    elif kind == "lightning-sharded":
        _check_sharded(path)
    elif kind == "legacy":
        _torch_load(path / LEGACY_WEIGHTS_FILE, mmap=True)
    return kind


def check_resumable(path: str | os.PathLike, option: str = "ckpt_path") -> None:
    """Refuse (CheckpointError) a ``ckpt_path`` that Lightning's resume cannot safely read:
    it must be a Lightning checkpoint (file or sharded folder) holding no pickled code."""
    kind = check_loadable(path)
    if kind in ("exported", "hf-llama", "legacy"):
        what = {"exported": "an exported model folder", "hf-llama": "a transformers model folder",
                "legacy": "a legacy MyPT folder"}[kind]
        raise CheckpointError(
            f"{option}={path}: is {what} (weights only); resuming needs a Lightning checkpoint "
            f"(<run dir>/checkpoints/*.ckpt). Start from these weights with init_from={path} instead")


def strip_wrapper_prefixes(name: str) -> str:
    """A parameter name without the parts torch.compile, FSDP, activation checkpointing
    and DDP add.

    >>> strip_wrapper_prefixes("module.blocks.0._checkpoint_wrapped_module.attn.qkv.weight")
    'blocks.0.attn.qkv.weight'
    """
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return re.sub(r"^(module\.)+", "", name)  # DDP


def _read_lightning(path: Path, mmap: bool = False):
    ckpt = _torch_load(path, mmap=mmap)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: file has no 'state_dict'; expected {EXPECTED_FORMATS}")
    if LIGHTNING_CONFIG_KEY not in ckpt:
        raise CheckpointError(f"{path}: Lightning checkpoint has no '{LIGHTNING_CONFIG_KEY}' (model config); "
                              "was it written by mypt-lightning's LightningModule?")
    config = _config_from(ckpt[LIGHTNING_CONFIG_KEY], f"{path} ['{LIGHTNING_CONFIG_KEY}']")
    sd = {strip_wrapper_prefixes(k[len("model."):]): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if not sd:
        raise CheckpointError(f"{path}: 'state_dict' has no keys starting with 'model.'")
    return sd, config


def _read_lightning_sharded(path: Path):
    import torch.distributed.checkpoint as dcp

    config = _sharded_config(path)
    stored = _read_dcp_metadata(path).state_dict_metadata
    # Keys as Lightning stores them: "model." (its state-dict entry) + "model." (our attribute).
    prefix = "model.model."
    names = {strip_wrapper_prefixes(k[len(prefix):]): k for k in stored if k.startswith(prefix)}
    if not names:
        raise CheckpointError(f"{path}: sharded checkpoint has no '{prefix}*' weights")
    targets = {key: torch.empty(tuple(stored[key].size), dtype=stored[key].properties.dtype)
               for key in names.values()}
    try:
        # Without a process group, DCP reads in this process and reassembles every shard
        # (and warns that it assumes so: that is the intent here).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
            dcp.load({"model": {k[len("model."):]: v for k, v in targets.items()}},
                     storage_reader=_safe_dcp_reader(path))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the sharded weights: {type(e).__name__}: {_one_line(e)}") from None
    return {name: targets[key] for name, key in names.items()}, config


def _sharded_config(path: Path) -> MyPTConfig:
    meta = _torch_load(path / SHARDED_METADATA_FILE)
    if not isinstance(meta, dict) or LIGHTNING_CONFIG_KEY not in meta:
        raise CheckpointError(f"{path / SHARDED_METADATA_FILE}: no '{LIGHTNING_CONFIG_KEY}' (model config); "
                              "was it written by mypt-lightning's LightningModule?")
    return _config_from(meta[LIGHTNING_CONFIG_KEY], f"{path / SHARDED_METADATA_FILE} ['{LIGHTNING_CONFIG_KEY}']")


def _read_exported(path: Path):
    config = _exported_config(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / WEIGHTS_FILE}: cannot read safetensors: {e}") from None
    return sd, config


def _exported_config(path: Path) -> MyPTConfig:
    meta = _read_json(path / CONFIG_FILE)
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path / CONFIG_FILE}: 'format' is {meta.get('format')!r}, expected "
                              f"{EXPORT_FORMAT!r} (or model_type 'llama' for a transformers folder)")
    if meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{path / CONFIG_FILE}: format_version {meta.get('format_version')!r} is not "
                              f"supported (this code reads version {EXPORT_FORMAT_VERSION})")
    return _config_from(meta.get("model"), f"{path / CONFIG_FILE} ['model']")


def _read_legacy(path: Path, mmap: bool = False):
    raw = _read_json(path / CONFIG_FILE)
    for field, want in _LEGACY_REQUIRED.items():
        if field in raw and str(raw[field]).lower() != want:
            raise CheckpointError(f"{path / CONFIG_FILE}: {field}={raw[field]!r} is not supported; "
                                  f"only {field}={want!r} models can be imported")
    if "n_head" not in raw:
        raise CheckpointError(f"{path / CONFIG_FILE}: missing 'n_head' (cannot be inferred from the weights)")
    problems = MyPTConfig.field_errors({k: raw[k] for k in (*_LEGACY_CONFIG_FIELDS, "tie_weights") if k in raw})
    if problems:
        raise CheckpointError(f"{path / CONFIG_FILE}: bad model config: {'; '.join(problems)}")
    obj = _torch_load(path / LEGACY_WEIGHTS_FILE, mmap=mmap)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path / LEGACY_WEIGHTS_FILE}: expected a state_dict of tensors")
    sd = {}
    for k, v in obj.items():
        name = strip_wrapper_prefixes(k)
        for pattern, repl in _LEGACY_RENAMES:
            new, n = re.subn(pattern, repl, name)
            if n:
                name = new
                break
        # a name no rule maps stays as it is: _validated reports it as unexpected
        sd[name] = v
    emb = sd.get("embed.weight")
    if emb is None:
        raise CheckpointError(f"{path / LEGACY_WEIGHTS_FILE}: no token_embedding_table.weight")
    head = sd.get("lm_head.weight")
    tied = bool(raw.get("tie_weights", head is None or torch.equal(head, emb)))
    if tied and head is not None and not torch.equal(head.float(), emb.float()):
        raise CheckpointError(f"{path}: tie_weights is true but lm_head.weight differs from the embedding")
    gate = sd.get("blocks.0.mlp.w_gate.weight")
    fields = {k: raw[k] for k in _LEGACY_CONFIG_FIELDS if k in raw}
    fields.update(
        vocab_size=emb.shape[0], n_embd=emb.shape[1], tie_weights=tied,
        n_layer=len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}),
        mlp_hidden=gate.shape[0] if gate is not None else None,
        lm_head_bias="lm_head.bias" in sd,
    )
    for k in ("vocab_size", "n_embd", "n_layer"):
        if k in raw and raw[k] != fields[k]:
            raise CheckpointError(f"{path}: config.json says {k}={raw[k]} but the weights have {fields[k]}")
    return sd, _config_from(fields, str(path / CONFIG_FILE))


def _validated(sd: dict, config: MyPTConfig, path: Path) -> dict[str, torch.Tensor]:
    """Check names and shapes against MyPT(config); re-alias a tied head; float32."""
    if not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{path}: the state_dict holds values that are not tensors")
    blocks = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if blocks != config.n_layer:  # before building the reference: a corrupt n_layer could be huge
        raise CheckpointError(f"{path}: the config says n_layer={config.n_layer} but the weights have {blocks} blocks")
    with torch.device("meta"):
        reference = MyPT(config).state_dict()
    sd = dict(sd)
    if config.tie_weights:
        sd.pop("lm_head.weight", None)
    expected = set(reference) - ({"lm_head.weight"} if config.tie_weights else set())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the config; missing keys: {missing}; "
                              f"unexpected keys: {unexpected}")
    bad = [f"{k}: {tuple(sd[k].shape)} != {tuple(reference[k].shape)}"
           for k in sorted(expected) if sd[k].shape != reference[k].shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch: {bad}")
    out = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    if config.tie_weights:
        out["lm_head.weight"] = out["embed.weight"]
    return out


# ----------------------------------------------------------------------------- saving


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, replaceable: Callable[[Path], bool]) -> Iterator[Path]:
    """``data_modules.atomic_write.atomic_directory`` for model folders: yield a temp dir next
    to out_dir; on success it replaces out_dir whole (fsynced, rolled back on failure).

    An existing out_dir is replaced only if it is empty or ``replaceable(out_dir)`` says it
    is a previous output of the same kind; else CheckpointError.
    """
    try:
        with atomic_directory(out_dir, replaceable, what="a previous export") as tmp:
            yield tmp
    except OutputWriteError as e:
        if e.errno == errno.EEXIST:
            raise CheckpointError(str(e)) from None
        raise


def _is_our_export(path: Path) -> bool:
    try:
        return _read_json(path / CONFIG_FILE).get("format") == EXPORT_FORMAT
    except CheckpointError:
        return False


def save_exported(model: MyPT, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` as format (b); a tied head is stored once. Returns the folder."""
    from safetensors.torch import save_file

    sd = model.state_dict()
    if model.config.tie_weights:
        sd.pop("lm_head.weight")
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    meta = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
            "model": model.config.to_dict(), "extra": extra or {}}
    with atomic_output_dir(out_dir, _is_our_export) as tmp:
        save_file(sd, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return Path(out_dir)
