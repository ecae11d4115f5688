"""prepare_sft: JSONL episodes -> a binary episode dataset (docs/design.md section 2), chat and tool alike.

Pipeline (two passes over the input; memory grows with the episode count, never the tokens)::

    pass 1  parent: cut each input into ~1 MB byte ranges of whole lines, sha256 it
            workers (all cores, bounded queue): read a range, parse, validate, serialize,
                     apply the length limit, compute the split keys
            parent: tokens/weights ─► scratch files beside the output (uint16 ids, uint8
                     weight codes); per episode: length, keys ─► compact arrays
            a bad record under --on-error stop aborts here, before anything is written
    split   groups of episodes sharing a user message -> train / val  (split.py)
    pass 2  unpacked: episodes in input order       ─┐
            packed:   best-fit decreasing per split  ├─► DatasetWriter (temp dir + rename)
                      (and per --pack_by_field group)┘
    report  counts, packing fill, supervised fraction, overlap -> dataset_metadata.json + summary

Too-long episodes (more tokens than the block, or than ``max_length`` unpacked) are
rejected and counted (default) or cut to the limit: ``truncate="head"`` keeps the first
tokens (``truncate_long``), ``"tail"`` the last ones (what the original MyPT packer did);
the summary and the metadata name the cut episodes (FILE:LINE).

``protocol`` selects the serializer (protocol_profiles.py): ``ours`` (default) or a legacy
MyPT profile (``mypt_chat`` with ``system_prompt``/``no_system_prompt``/``rag_tags``,
``mypt_tool``); legacy packed blocks are padded with <myPT_eot> at weight 0, as the
originals did.

Nothing is left behind: every way out (an error, a full disk, SIGTERM and Ctrl-C, which the
command line turns into exceptions) removes the scratch folder ``.NAME.scratch-<host>-<pid>-*``
and the writer's temp folder; what a SIGKILLed run left beside the same output is removed
by the next run (it names it). Pool workers die with the parent (``PR_SET_PDEATHSIG``) and
leave stop signals to it. A full disk, a read-only or not writable location is one
:class:`UserError` naming the output.
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing as mp
import multiprocessing.pool
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mypt_lightning.errors import UserError
from mypt_lightning.tokens.protocol import EpisodeError

from . import _prepare_worker as worker
from .jsonl import ErrorLog, check_input_files, iter_records
from .prepare_write import summarize, write_dataset
from .split import assign_val_split, find_examples, overlap

CHUNK_BYTES = 1 << 20  # work unit of a tokenizer process
DEFAULT_OVERLAP_FIELDS = ("_meta.payload",)
MAX_EXAMPLES = 10


@dataclass
class PrepareConfig:
    inputs: list[str]
    output_dir: str
    val_split: float = 0.05
    seed: int = 0
    packing: bool = False
    block_size: int = 4096
    max_length: int | None = None  # unpacked datasets only; packed ones use block_size
    pack_by_field: str | None = None
    weighted: bool = False
    on_error: str = "stop"
    truncate_long: bool = False
    split_by_fields: list[str] = field(default_factory=list)
    overlap_fields: list[str] = field(default_factory=lambda: list(DEFAULT_OVERLAP_FIELDS))
    num_workers: int | None = None  # None: all cores (one process for inputs under 1 MB)
    overwrite: bool = False
    progress: bool | None = None  # None: only on a terminal
    command: str | None = None
    truncate: str | None = None  # "head" | "tail"; None: truncate_long decides ("head") or reject
    protocol: str = "ours"
    system_prompt: str | None = None  # legacy profiles only
    no_system_prompt: bool = False
    rag_tags: bool = False

    def truncation(self) -> str | None:
        """"head", "tail" or None (reject)."""
        return self.truncate or ("head" if self.truncate_long else None)

    def profile(self):
        from mypt_lightning.tokens.protocol_profiles import get_profile

        options = {}
        if self.system_prompt is not None or self.no_system_prompt or self.rag_tags:
            options = {"system_prompt": self.system_prompt, "no_system_prompt": self.no_system_prompt,
                       "rag_tags": self.rag_tags or None}
        return get_profile(self.protocol, **options)


@dataclass
class PrepareResult:
    output_dir: Path
    metadata: dict[str, Any]
    summary: str


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _Store:
    """Serialized episodes of pass 1: tokens and weights in scratch files, the rest in arrays."""

    def __init__(self, directory: Path, overlap_fields: list[str]):
        self.tokens_path, self.weights_path = directory / "tokens.u16", directory / "weight_codes.u8"
        self._tokens = open(self.tokens_path, "wb")
        self._weights = open(self.weights_path, "wb")
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                                   ("lengths", "source", "user", "user_n", "extra", "extra_n")}
        self.overlap_parts = {f: ([], []) for f in overlap_fields}
        self.group_ids: dict[str | None, int] = {}
        self.groups: list[np.ndarray] = []
        self.replay = self.truncated = self.records = 0
        self.too_long: list[str] = []
        self.too_long_count = 0
        self.cut: list[str] = []  # FILE:LINE of truncated episodes (the first MAX_EXAMPLES)

    def add(self, source: int, path: str, result: dict[str, Any]) -> None:
        self._tokens.write(result["tokens"].tobytes())
        self._weights.write(result["weight_codes"].tobytes())
        p = self.parts
        p["lengths"].append(result["lengths"])
        p["source"].append(np.full(result["lengths"].size, source, dtype=np.int32))
        p["user"].append(result["user"][0])
        p["user_n"].append(result["user"][1])
        p["extra"].append(result["extra"][0])
        p["extra_n"].append(result["extra"][1])
        for f, (keys, counts) in result["overlap"].items():
            self.overlap_parts[f][0].append(keys)
            self.overlap_parts[f][1].append(counts)
        if result["groups"]:
            self.groups.append(np.array([self.group_ids.setdefault(g, len(self.group_ids))
                                         for g in result["groups"]], dtype=np.int32))
        self.replay += result["replay"]
        self.truncated += result["truncated"]
        self.records += result["records"]
        self.too_long_count += len(result["too_long"])
        for number, n in result["too_long"]:
            if len(self.too_long) < MAX_EXAMPLES:
                self.too_long.append(f"{path}:{number}: {n} tokens")
        for number, n in result.get("cut", ()):
            if len(self.cut) < MAX_EXAMPLES:
                self.cut.append(f"{path}:{number}: {n} tokens")

    def finish(self) -> None:
        self._tokens.close()
        self._weights.close()
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in self.parts.items()}
        self.lengths, self.source = cat["lengths"], cat["source"]
        self.num = int(self.lengths.size)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        episodes = np.arange(self.num, dtype=np.int64)
        self.user_keys = cat["user"].astype(np.uint64)
        self.user_owner = np.repeat(episodes, cat["user_n"])
        extra_keys, extra_owner = cat["extra"].astype(np.uint64), np.repeat(episodes, cat["extra_n"])
        self.split_keys = np.concatenate([self.user_keys, extra_keys])
        self.split_owner = np.concatenate([self.user_owner, extra_owner])
        self.overlap_keys = {f: (np.concatenate(k).astype(np.uint64) if k else np.zeros(0, np.uint64),
                                 np.repeat(episodes, np.concatenate(c)) if c else np.zeros(0, np.int64))
                             for f, (k, c) in self.overlap_parts.items()}
        self.group = np.concatenate(self.groups) if self.groups else np.zeros(self.num, np.int32)
        n_tokens = int(self.offsets[-1])
        self.tokens = np.memmap(self.tokens_path, np.uint16, "r") if n_tokens else np.zeros(0, np.uint16)
        self.weights = np.memmap(self.weights_path, np.uint8, "r") if n_tokens else np.zeros(0, np.uint8)

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b].astype(np.uint32), self.weights[a:b] * np.float32(0.5)

    def episodes(self, ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several episodes, decoded with one conversion (views into one array each)."""
        starts, ends = self.offsets[ids], self.offsets[np.asarray(ids) + 1]
        tokens = np.concatenate([self.tokens[a:b] for a, b in zip(starts.tolist(), ends.tolist())])
        codes = np.concatenate([self.weights[a:b] for a, b in zip(starts.tolist(), ends.tolist())])
        tokens, weights = tokens.astype(np.uint32), codes * np.float32(0.5)
        bounds = np.concatenate([[0], np.cumsum(ends - starts)]).tolist()
        return [(tokens[x:y], weights[x:y]) for x, y in zip(bounds[:-1], bounds[1:])]

    def close(self) -> None:
        for handle in (self._tokens, self._weights):
            if not handle.closed:
                handle.close()
        self.tokens = self.weights = None  # release the memory maps before the scratch dir goes


def _chunks(paths: list[Path], digests: list, progress) -> Iterator[tuple[int, tuple[str, int, int, int]]]:
    """``(source, (path, start, length, first_line))``: byte ranges of about CHUNK_BYTES that
    end at a line end. Workers read their range themselves, so only these few numbers cross
    process boundaries; every input is hashed (sha256) here, block by block."""
    for source, path in enumerate(paths):
        digest = hashlib.sha256()
        offset, line, pending = 0, 1, b""
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                digest.update(block)
                data = pending + block
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    yield source, (str(path), offset, cut, line)
                    offset, line = offset + cut, line + data.count(b"\n", 0, cut)
                    progress.update(cut)
        if pending:
            yield source, (str(path), offset, len(pending), line)
            progress.update(len(pending))
        digests.append(digest.hexdigest())


class _KillingPool(multiprocessing.pool.Pool):
    """A pool whose ``terminate()`` ends its forked workers with SIGKILL.

    The workers ignore SIGTERM from anyone but this process (``init_pool_worker``), and
    when a group SIGTERM has just reached them, the pool's own SIGTERM merges into that
    one (standard signals do not queue) and is lost: ``terminate()`` then waited forever.
    SIGKILL is safe where the pool sends it: after the workers were told to stop and the
    queues' locks were taken over. (They would not be before: a worker killed while it
    holds a queue lock deadlocks the pool, so only the pool may kill them.)"""

    @staticmethod
    def Process(ctx, *args, **kwds):
        process = ctx.Process(*args, **kwds)
        if ctx.get_start_method() == "fork":  # other start methods pickle the process object
            process.terminate = process.kill
        return process


def _pass1(cfg: PrepareConfig, paths: list[Path], store: _Store, errors: ErrorLog, limit: int | None,
           digests: list[str], workers: int) -> None:
    from tqdm import tqdm

    options = {"weighted": cfg.weighted, "max_length": limit, "truncate": cfg.truncation(), "profile": cfg.profile(),
               "pack_by_field": cfg.pack_by_field, "split_by_fields": list(cfg.split_by_fields),
               "overlap_fields": list(cfg.overlap_fields)}
    total = sum(p.stat().st_size for p in paths)

    def handle(source: int, path: str, result: dict[str, Any]) -> None:
        for where, field_name, reason in result["errors"]:
            errors.handle(EpisodeError(where, field_name, reason))  # raises under --on-error stop
        store.add(source, path, result)

    pool = None
    if workers > 1:
        context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        pool = _KillingPool(workers, initializer=worker.init_pool_worker, initargs=(options, os.getpid()),
                            context=context)
    else:
        worker.init_worker(options)
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="tokenize", disable=_no_progress(cfg),
                  leave=False) as bar:
            if pool is None:
                for source, task in _chunks(paths, digests, bar):
                    handle(source, task[0], worker.process_chunk(task))
            else:
                pending: deque = deque()
                for source, task in _chunks(paths, digests, bar):
                    pending.append((source, task[0], pool.apply_async(worker.process_chunk, (task,))))
                    if len(pending) >= 3 * workers:
                        s, p, r = pending.popleft()
                        handle(s, p, r.get())
                while pending:
                    s, p, r = pending.popleft()
                    handle(s, p, r.get())
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _no_progress(cfg: PrepareConfig) -> bool | None:
    return None if cfg.progress is None else not cfg.progress


def _check_config(cfg: PrepareConfig) -> int | None:
    if not cfg.inputs:
        raise UserError("no --input given")
    if not 0.0 <= cfg.val_split < 1.0:
        raise UserError(f"--val_split must be in [0, 1), got {cfg.val_split}")
    if cfg.packing and cfg.block_size < 2:
        raise UserError(f"--pack_block_size must be >= 2, got {cfg.block_size}")
    if cfg.max_length is not None and cfg.max_length < 1:
        raise UserError(f"--max_length must be >= 1, got {cfg.max_length}")
    if cfg.pack_by_field and not cfg.packing:
        raise UserError("--pack_by_field needs --enable_packing")
    if cfg.num_workers is not None and cfg.num_workers < 1:
        raise UserError(f"--num_workers must be >= 1, got {cfg.num_workers}")
    if cfg.truncate not in (None, "head", "tail"):
        raise UserError(f"--truncate must be head or tail, got {cfg.truncate!r}")
    if cfg.truncate_long and cfg.truncate == "tail":
        raise UserError("--truncate_long keeps the head; it contradicts --truncate tail")
    if cfg.truncation() and not cfg.packing and cfg.max_length is None:
        flag = "--truncate_long" if cfg.truncate is None else "--truncate"
        raise UserError(f"{flag} needs a limit: --enable_packing (block size) or --max_length")
    cfg.profile()  # an unknown protocol or options it does not take: named before anything runs
    out = Path(cfg.output_dir)
    if (out.exists() or out.is_symlink()) and not cfg.overwrite:
        raise UserError(f"output {out} already exists; pass --overwrite to replace it (atomically)")
    return cfg.block_size if cfg.packing else cfg.max_length


def prepare_sft(cfg: PrepareConfig) -> PrepareResult:
    """Run the whole pipeline; raises UserError (nothing written) on bad input or flags."""
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    start = time.time()
    limit = _check_config(cfg)
    paths = check_input_files(cfg.inputs)
    tokenizer = get_tokenizer()  # fails early (and before forking) when the BPE file is missing
    total_bytes = sum(p.stat().st_size for p in paths)
    workers = cfg.num_workers or (available_cores() if total_bytes >= (1 << 20) else 1)
    out = Path(cfg.output_dir).absolute()
    errors = ErrorLog(cfg.on_error, max_examples=MAX_EXAMPLES)
    digests: list[str] = []
    scratch: Path | None = None
    store: _Store | None = None
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_leftovers(out)
            scratch = _make_scratch(out)
            store = _Store(scratch, list(cfg.overlap_fields))
            _pass1(cfg, paths, store, errors, limit, digests, workers)
            store.finish()
            if store.num == 0:  # name the inputs and why, or the user has nothing to go on
                why = [f"{store.records} records read", f"{errors.count} bad"]
                if limit is not None:
                    why.append(f"{store.too_long_count} longer than {limit} tokens")
                if errors.examples:
                    why.append(f"first bad record: {errors.examples[0]}")
                raise UserError(f"no episodes to write from {', '.join(str(p) for p in paths)}: {', '.join(why)}")
            split = assign_val_split(store.num, store.split_keys, store.split_owner, cfg.val_split, cfg.seed)
            report = _overlap_report(paths, store, split.is_val)
            sources = _sources(paths, digests, store)
            metadata = write_dataset(cfg, store, split, report, sources, errors, tokenizer.state_dict(), limit)
        finally:
            try:
                if store is not None:
                    store.close()  # flushing onto a full disk raises again: the scratch must still go
            finally:
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        message = _output_error_message(exc, out, scratch)
        if message is None:
            raise
        raise UserError(message) from None
    return PrepareResult(out, metadata, summarize(cfg, metadata, time.time() - start, workers))


def _make_scratch(out: Path) -> Path:
    """``.NAME.scratch-<host>-<pid>-<random>`` beside the output: the pid tells a later run
    whether its writer still runs (see :func:`_remove_stale_leftovers`)."""
    from data_modules.atomic_write import make_temp_dir

    return make_temp_dir(out, kind="scratch")


def _remove_stale_leftovers(out: Path) -> None:
    """Remove what a killed (SIGKILL, power loss) earlier writer of ``out`` left beside it:
    its scratch folder and the dataset writer's temp folders; live writers' are kept."""
    from data_modules.atomic_write import remove_stale_temps

    removed = [p.name for p in remove_stale_temps(out.parent, out.name, extra_kinds=("scratch",))]
    if removed:
        print(f"prepare_sft: removed what an interrupted earlier run left beside {out}: {', '.join(sorted(removed))}",
              file=sys.stderr)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}


def _output_error_message(exc: OSError, out: Path, scratch: Path | None) -> str | None:
    """One line for a full disk or an unwritable output (None: not the output's problem, e.g.
    an unreadable input, which keeps its own error)."""
    from data_modules.atomic_write import output_error

    if exc.errno in _PERMISSION_ERRNOS and exc.filename is not None:
        name = Path(os.fsdecode(exc.filename)).absolute()
        ours = (str(out), str(out.parent / f".{out.name[:180]}."), str(scratch or out))
        if not (name in out.parents or str(name).startswith(ours)):  # creating a parent, or our files
            return None
    elif exc.errno not in _OUTPUT_ERRNOS:
        return None
    translated = output_error(exc, out)
    return None if translated is None else f"{translated} (nothing was written, temporary files removed)"


def _sources(paths: list[Path], digests: list[str], store: _Store) -> list[dict[str, Any]]:
    per_source = np.bincount(store.source, minlength=len(paths)) if store.num else np.zeros(len(paths), int)
    return [{"path": str(p), "sha256": d, "episodes": int(n)} for p, d, n in zip(paths, digests, per_source)]


def _overlap_report(paths: list[Path], store: _Store, is_val: np.ndarray) -> dict[str, Any]:
    kinds = {"user": (store.user_keys, store.user_owner)}
    kinds.update(store.overlap_keys)
    report = {kind: overlap(keys, owners, is_val) for kind, (keys, owners) in kinds.items()}
    wanted = {kind: r.pop("shared_keys") for kind, r in report.items()}
    if any(len(v) for v in wanted.values()):
        examples = find_examples(iter_records(paths, ErrorLog("skip")), wanted)
        for kind, texts in examples.items():
            report[kind]["examples"] = texts
    return report
