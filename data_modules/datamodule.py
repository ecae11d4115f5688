"""The LightningDataModule for every SFT phase: mixture, epoch sampling, validation sets, exact resume.

Exact resume (docs/design.md section 4)
--------------------------
The DataLoader's workers and prefetching run ahead of training, so the sampler's own
position says nothing about what the model has consumed. Instead every batch carries the
sampler key of each row (``epoch``, ``position``), and :meth:`SFTDataModule.on_before_batch_transfer`
-- called by Lightning in the main process for the batch that is about to be trained on,
right before it is moved to the device -- records the position after the last row. That
``(epoch, index)`` pair is what :meth:`state_dict` returns; Lightning 2.6 stores it in every
checkpoint under the class name (``_CheckpointConnector.dump_checkpoint``) and, on
``fit(ckpt_path=...)``, calls :meth:`load_state_dict` after ``setup()`` and before
``train_dataloader()`` (``Trainer._run`` -> ``_restore_modules_and_callbacks`` ->
``restore_datamodule``, then ``fit_loop.run`` -> ``setup_data``). The new loader's sampler
starts exactly there: O(1), nothing is replayed.

The hook is the CPU-side ``on_before_batch_transfer`` rather than ``on_after_batch_transfer``:
both run at the same point of the training loop, but reading the keys before the transfer
avoids a device sync per step. (If the LightningModule also overrides this hook, Lightning
uses the DataModule's and warns.)

What Lightning does with this endless loader: the sampler has no ``__len__``, so
``fit_loop.setup_data`` sees ``max_batches = inf``; Lightning's epoch never ends (training
stops at ``max_steps``; validation needs an integer ``val_check_interval``). On a mid-"epoch"
resume with ``max_steps`` set, the fit loop is "restarting"; because the length is infinite
it skips its "dataloader is not resumable" check and it never fast-forwards or replays
batches itself (Lightning 2.x only restores loaders that implement ``state_dict``, which a
plain DataLoader does not): it simply calls ``iter()`` on the loader we return, which starts
at the restored position. It also calls ``set_epoch`` on samplers that have one; ours has
none on purpose (Lightning's epoch counter stays 0).

Sharding across ranks is done here (train: strided epoch shards; validation: contiguous
slices), so the Trainer must not inject its own DistributedSampler:
``Trainer(use_distributed_sampler=False)`` (conf/trainer sets it); we refuse to run
distributed otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from .collate import collate_samples
from .episode_format import DatasetFormatError, list_splits
from .episode_reader import EpisodeDataset
from .mixture import MixtureDataset, SourceDataset
from .sampler import EpochSampler, EvalSampler

PRIMARY_VAL_NAME = "val"


class WorkerInit:
    """``worker_init_fn`` of every loader here (docs/design.md section 8: DataLoader workers never act
    on signals). A scheduler's SIGTERM or a terminal's Ctrl-C reaches the whole process
    group; a worker that died of it would crash training ("DataLoader worker ... killed
    by signal") before the main process could save at the step end. So workers ignore
    both (the main process ends them), die with the main process, and then get Lightning's
    worker seeding, which Lightning adds only to loaders without a ``worker_init_fn``.

    A class rather than a closure: loaders with the spawn start method pickle it.
    """

    def __init__(self, parent_pid: int, rank: int):
        self.parent_pid = parent_pid
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        from data_modules.process_lifetime import die_with_parent, ignore_stop_signals

        # The kernel kills the worker when the thread that created it ends: Lightning
        # iterates the loaders in the main thread.
        die_with_parent(self.parent_pid)
        ignore_stop_signals(self.parent_pid)
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id, rank=self.rank)


def _plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) -> plain dicts/lists, without importing omegaconf."""
    if isinstance(value, Mapping):
        return {str(k): _plain(value[k]) for k in value}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _resolve_components(dataset_dir: str | None, data_mix: list[dict] | None) -> list[tuple[str, str, float]]:
    if data_mix:
        components = []
        for number, entry in enumerate(data_mix):
            if not isinstance(entry, dict) or "path" not in entry:
                raise ValueError(
                    f"data_mix[{number}] must be a mapping with 'path' (and 'name', 'weight'), got {entry!r}"
                )
            path = str(entry["path"])
            name = str(entry.get("name") or Path(path).name)
            weight = float(entry.get("weight", 1.0))
            components.append((name, path, weight))
        if dataset_dir is not None and os.path.realpath(dataset_dir) != os.path.realpath(components[0][1]):
            raise ValueError(
                f"dataset_dir {dataset_dir!r} must be the first data_mix component (the primary), "
                f"but data_mix[0] is {components[0][0]!r} at {components[0][1]!r}"
            )
        return components
    if dataset_dir is None:
        raise ValueError("SFTDataModule needs dataset_dir or data_mix")
    return [(Path(dataset_dir).name or "primary", str(dataset_dir), 1.0)]


class SFTDataModule(L.LightningDataModule):
    """Train on a weighted mixture of prepared episode datasets; validate on the primary's
    val split and on extra ``eval_sets``; resume exactly (see the module docstring).

    Args:
        dataset_dir: the phase's prepared dataset (the primary component).
        data_mix: ``[{name, path, weight}, ...]``; the first entry is the primary (and must be
            ``dataset_dir`` when both are given). None: ``dataset_dir`` alone.
        batch_size: rows per training micro-batch.
        block_size: model context; unpacked samples are cut to ``block_size + 1`` tokens
            (block_size inputs), packed datasets must have blocks of at most that size.
        epoch_seed: seeds the epoch permutations and the mixture draws.
        num_workers, pin_memory: DataLoader settings (train and validation).
        eval_sets: ``{name: dataset_dir}``; each validates on its val split (train if none).
        max_val_samples: validate on the first N samples of each validation set.
        val_batch_size: defaults to ``batch_size``.
        check_tokens: scan every token id (and mask value) when opening datasets. Off by
            default: opening then costs O(index), not a read of tokens.bin (run
            tools/validate_sft_dataset.py for the full scan); each sample's ids and weights
            are still checked as it is read, so a bad id fails naming the file.
    """

    def __init__(
        self,
        dataset_dir: str | None = None,
        data_mix: list[dict] | None = None,
        *,
        batch_size: int,
        block_size: int,
        epoch_seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_sets: dict[str, str] | None = None,
        max_val_samples: int | None = None,
        val_batch_size: int | None = None,
        check_tokens: bool = False,
        truncate: str = "head",
    ):
        super().__init__()
        if truncate not in ("head", "tail"):
            raise ValueError(f"data.truncate must be 'head' or 'tail', got {truncate!r}")
        self.truncate = truncate  # an episode longer than block_size + 1 keeps its first/last tokens
        dataset_dir = None if dataset_dir is None else str(dataset_dir)
        data_mix = _plain(data_mix) if data_mix is not None else None
        eval_sets = {str(k): str(v) for k, v in (_plain(eval_sets) or {}).items()}
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be positive, got {batch_size}, {block_size}")
        if PRIMARY_VAL_NAME in eval_sets:
            raise ValueError(f"eval_sets may not use the name {PRIMARY_VAL_NAME!r} (it is the primary val split)")
        self.components = _resolve_components(dataset_dir, data_mix)
        self.dataset_dir = self.components[0][1]
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.epoch_seed = int(epoch_seed)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.eval_sets = eval_sets
        self.max_val_samples = max_val_samples
        self.val_batch_size = int(val_batch_size or batch_size)
        self.check_tokens = bool(check_tokens)
        self.save_hyperparameters(
            {
                "dataset_dir": dataset_dir,
                "data_mix": data_mix,
                "batch_size": self.batch_size,
                "block_size": self.block_size,
                "epoch_seed": self.epoch_seed,
                "num_workers": self.num_workers,
                "eval_sets": eval_sets,
                "max_val_samples": max_val_samples,
                "val_batch_size": self.val_batch_size,
            }
        )
        self.train_set: MixtureDataset | None = None
        self._val_sets: list[tuple[str, EpisodeDataset]] | None = None
        self._val_set_names: list[str] | None = None
        # Position of the next training sample this rank will consume (see module docstring).
        self._epoch = 0
        self._index = 0
        self._samples_per_rank: int | None = None
        self._loaded_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ ranks
    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _require_own_sharding(self) -> None:
        trainer = self.trainer
        if trainer is None or int(trainer.world_size) <= 1:
            return
        connector = getattr(trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False):
            raise RuntimeError(
                "SFTDataModule shards the data across ranks itself; create the Trainer with "
                "use_distributed_sampler=False (trainer.use_distributed_sampler: false in conf/trainer)"
            )

    # ------------------------------------------------------------------ datasets
    def _open(self, path: str, split: str) -> EpisodeDataset:
        dataset = EpisodeDataset(
            path, split, max_length=self.block_size + 1, check_tokens=self.check_tokens, check_samples=True,
            truncate=self.truncate,
        )
        if dataset.packed:
            if dataset.block_size is not None and dataset.block_size > self.block_size + 1:
                raise DatasetFormatError(
                    dataset.split_dir,
                    f"packed blocks of {dataset.block_size} tokens do not fit the model's context block_size="
                    f"{self.block_size} (at most block_size + 1 tokens per sample): re-pack the dataset with "
                    f"block_size <= {self.block_size + 1}, or train with model.block_size >= {dataset.block_size - 1}",
                )
        else:
            no_target = int(np.count_nonzero(dataset.sample_lengths() < 2))
            if no_target:
                # Valid in the format, but a 1-token episode has no next token to predict.
                rank_zero_warn(
                    f"{dataset.split_dir}: {no_target} of {len(dataset)} episodes have a single token and "
                    f"train nothing (an episode needs >= 2 tokens to have a target)"
                )
            too_long = int(np.count_nonzero(dataset.sample_lengths() > self.block_size + 1))
            if too_long:
                rank_zero_warn(
                    f"{dataset.split_dir}: {too_long} of {len(dataset)} episodes are longer than block_size + 1 = "
                    f"{self.block_size + 1} tokens and are cut to their first {self.block_size + 1} tokens"
                )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            parts = [(name, self._open(path, "train"), weight) for name, path, weight in self.components]
            for _, dataset, weight in parts:
                if weight > 0 and len(dataset) == 0:  # the mixture would refuse it naming no file
                    raise DatasetFormatError(dataset.split_dir, "holds no samples: nothing to train on")
            self.train_set = MixtureDataset(parts, seed=self.epoch_seed)
            rank_zero_info(f"SFTDataModule: {self.train_set.describe()}")
        if stage in (None, "fit", "validate") and self._val_sets is None:
            self._val_sets = [(name, self._open(path, split)) for name, path, split in self._val_specs()]

    def _val_specs(self) -> list[tuple[str, str, str]]:
        specs = []
        if PRIMARY_VAL_NAME in list_splits(self.dataset_dir):
            specs.append((PRIMARY_VAL_NAME, self.dataset_dir, PRIMARY_VAL_NAME))
        else:
            rank_zero_warn(f"{self.dataset_dir} has no val split; validating on eval_sets only")
        for name, path in self.eval_sets.items():
            split = PRIMARY_VAL_NAME if PRIMARY_VAL_NAME in list_splits(path) else "train"
            specs.append((name, path, split))
        return specs

    @property
    def val_set_names(self) -> list[str]:
        """Names of the validation loaders, in :meth:`val_dataloader` order (``val`` first)."""
        if self._val_sets is not None:
            return [name for name, _ in self._val_sets]
        if self._val_set_names is None:
            self._val_set_names = [name for name, _, _ in self._val_specs()]
        return list(self._val_set_names)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        self._require_own_sharding()
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        rank, world_size = self._rank_and_world()
        epoch, index = self._resume_position(world_size)
        sampler = EpochSampler(
            len(self.train_set), self.epoch_seed, rank, world_size, shuffle=True, start_epoch=epoch, start_index=index
        )
        self._samples_per_rank = sampler.samples_per_rank
        self._epoch, self._index = sampler.start_epoch, sampler.start_index
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_samples,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=self._loader_generator(),
            worker_init_fn=self._worker_init_fn(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        self._require_own_sharding()
        if self._val_sets is None:
            self.setup("validate")
        assert self._val_sets is not None
        rank, world_size = self._rank_and_world()
        return [
            DataLoader(
                SourceDataset(dataset, source_id=number),
                batch_size=self.val_batch_size,
                sampler=EvalSampler(len(dataset), rank, world_size, limit=self.max_val_samples),
                collate_fn=collate_samples,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                generator=self._loader_generator(),
                worker_init_fn=self._worker_init_fn(),
            )
            for number, (_, dataset) in enumerate(self._val_sets)
        ]

    def _worker_init_fn(self) -> "WorkerInit":
        return WorkerInit(parent_pid=os.getpid(), rank=self._rank_and_world()[0])

    def _loader_generator(self) -> torch.Generator:
        # A DataLoader without its own generator draws its worker base seed from the global
        # RNG each time it is iterated. That would shift dropout/NEFTune noise between an
        # uninterrupted run and a resumed one (which iterates its loaders at other moments).
        return torch.Generator().manual_seed(self.epoch_seed)

    # ------------------------------------------------------------------ exact resume
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            self.record_consumed(batch)
        return batch

    def record_consumed(self, batch: Mapping[str, Any]) -> None:
        """Advance the resume position past the last row of a training batch."""
        if not isinstance(batch, Mapping) or "epoch" not in batch or "position" not in batch:
            return
        epoch, position = int(batch["epoch"][-1]), int(batch["position"][-1]) + 1
        if self._samples_per_rank and position >= self._samples_per_rank:
            epoch, position = epoch + position // self._samples_per_rank, position % self._samples_per_rank
        self._epoch, self._index = epoch, position

    def state_dict(self) -> dict[str, Any]:
        _, world_size = self._rank_and_world()
        return {
            "epoch": self._epoch,
            "index": self._index,
            "world_size": world_size,
            "epoch_seed": self.epoch_seed,
            "num_samples": None if self.train_set is None else len(self.train_set),
            "components": [name for name, _, _ in self.components],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch = int(state_dict["epoch"])
        self._index = int(state_dict["index"])
        self._loaded_state = dict(state_dict)

    def _resume_position(self, world_size: int) -> tuple[int, int]:
        epoch, index = self._epoch, self._index
        state, self._loaded_state = self._loaded_state, None
        if state is None:
            return epoch, index
        old_world = int(state.get("world_size") or world_size)
        if old_world != world_size:
            # Same number of samples consumed per epoch overall, spread over the new ranks.
            index = index * old_world // world_size
            rank_zero_warn(
                f"resuming on {world_size} ranks from a checkpoint written on {old_world}: continuing at "
                f"epoch {epoch}, index {index}; the sample order differs from an uninterrupted run"
            )
        changed = [
            key
            for key, now in (
                ("epoch_seed", self.epoch_seed),
                ("num_samples", None if self.train_set is None else len(self.train_set)),
                ("components", [name for name, _, _ in self.components]),
            )
            if key in state and state[key] != now
        ]
        if changed:
            rank_zero_warn(
                f"the training data changed since the checkpoint ({', '.join(changed)}); resuming at epoch {epoch}, "
                f"index {index} of the new order"
            )
        return epoch, index
