"""Compose-and-call: turn a composed Hydra config into a Lightning run.

``run.py`` calls :func:`train` with the config Hydra composed from ``conf/``. Everything
a run needs is instantiated here from the config (``data``, ``logger``, ``callbacks``,
``trainer``); the only decisions taken in code are the ones a config cannot express:

* ``init_from: auto`` -> the previous phase's export (found beside this run's directory),
  or ``paths.base_model`` for phase 1b; a missing one stops before anything starts and
  names the command that produces it;
* the model config fitted to the weights it starts from (:func:`fit_model_to_checkpoint`):
  ``lm_head_bias`` from the checkpoint, block_size / rope_scale from the config (said in one
  line, and warned about when rope_scale changes outside phase 1b);
* ``ckpt_path: last`` -> ``<run dir>/checkpoints/last.ckpt``; without it, a run directory
  that holds a previous run is refused (``overwrite: true`` moves it aside first);
* the W&B run id, kept in ``<run dir>/run_info.json`` so a resumed run continues the same
  W&B run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from data_modules.atomic_write import write_text_atomic
from data_modules.episode_format import DatasetFormatError
from mypt_lightning.weights.checkpoint import check_loadable, check_resumable, trusted_types
from mypt_lightning.config import sweep_name
from mypt_lightning.training.config_checks import validate_config
from mypt_lightning.training.console import capture_run_log, silence_known_noise
from mypt_lightning.training.curriculum import resolve_init_from, run_phase_gate
from mypt_lightning.errors import UserError
from mypt_lightning.training.fault_tolerance import (
    Preemption,
    check_output_dir,
    claim_run_dir,
    estimate_checkpoint_bytes,
    is_first_process,
)
from mypt_lightning.training.loggers import wandb_loggers

RUN_INFO = "run_info.json"


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` -> this run's last.ckpt (must exist); ``auto`` -> last.ckpt if there is one
    (requeued jobs: the same command starts fresh or resumes); a path must exist."""
    if not ckpt_path:
        return None
    if ckpt_path == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():
        raise UserError(
            f"ckpt_path={ckpt_path}: no checkpoint at {path}. A run keeps its checkpoints in "
            f"<run dir>/checkpoints/ (this run's dir: {output_dir}); resume with the same "
            f"phase/run_name as the killed run."
        )
    return str(path)


def check_datasets(cfg: DictConfig):
    """Fail before building anything if a dataset the run reads is missing, damaged, made
    with another tokenizer, or packed for a longer context than the model's.

    Returns the run's DataModule with every split it reads open: the reader's checks of
    sizes, index and metadata cost O(index), the token scan is left to validate_sft_dataset.
    """
    paths = []
    if cfg.data_mix.get("components"):
        paths += [(c["name"], c["path"]) for c in cfg.data_mix.components]
    else:
        paths.append((cfg.phase.name, cfg.data.dataset_dir))
    paths += list((cfg.data_mix.get("eval_sets") or {}).items())
    missing = [(name, path) for name, path in paths if not Path(path).exists()]
    if missing:
        listing = "; ".join(f"{name}: {path}" for name, path in missing)
        raise UserError(
            f"dataset not found ({listing}). Build a phase's data with "
            f"`python tools/prepare_phase.py phase=<phase>` or tools/prepare_sft.py, point "
            f"phase.dataset_dir / data_mix at existing datasets, or use data_mix=none."
        )
    from hydra.errors import InstantiationException

    from data_modules.episode_format import DatasetFormatError
    from mypt_lightning.data_prep.validate import check_tokenizer_state

    try:
        datamodule = instantiate(cfg.data, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):  # the DataModule's argument checks
            raise UserError(f"data: {err.__cause__}") from None
        raise
    try:
        for path in dict.fromkeys([p for _, p, _ in datamodule.components] + list(datamodule.eval_sets.values())):
            check_tokenizer_state(path)
        datamodule.setup("fit")
    except DatasetFormatError as err:
        # data_modules cannot import UserError (it depends on special_tokens only): this is
        # where a damaged dataset becomes the one-line error of every entry point.
        roots = [Path(p) for _, p, _ in datamodule.components] + [Path(p) for p in datamodule.eval_sets.values()]
        root = next((r for r in roots if err.path.is_file() and err.path.is_relative_to(r)), None)
        hint = f"; check the dataset with `python tools/validate_sft_dataset.py --dataset {root}`" if root else ""
        raise UserError(f"{err}{hint}") from None
    except OSError as err:
        raise UserError(f"cannot read a dataset file: {err}") from None
    return datamodule


def count_parameters(cfg: DictConfig) -> int:
    """Parameters of the configured model, counted on the meta device (no memory used)."""
    import torch

    from mypt_lightning.model import MyPT, MyPTConfig

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("compile", None)
    with torch.device("meta"):
        return MyPT(MyPTConfig.from_dict(model_cfg)).num_parameters()


def fit_model_to_checkpoint(cfg: DictConfig, path: str, option: str = "init_from") -> None:
    """Make ``cfg.model`` fit the weights at ``path`` (the run's init_from, or the checkpoint
    it resumes), before anything is built or written.

    ``lm_head_bias`` is taken from the checkpoint (a legacy MyPT base has one); fields that
    are not weights (block_size, rope_scale, ...) keep the config's values, and one line
    says which differ; a rope_scale change in a phase that does not extend the context
    (``phase.extends_context``: phase 1b) is also warned about; any other architecture
    difference is ArchitectureMismatchError, naming each field.
    """
    from mypt_lightning.weights.checkpoint import CHECKPOINT_FIELDS, fit_config_to_checkpoint, read_config
    from mypt_lightning.model import MyPTConfig

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("compile", None)
    found = read_config(path)
    fitted, changed, taken = fit_config_to_checkpoint(found, MyPTConfig.from_dict(model_cfg), f"{option}={path}")
    with open_dict(cfg):
        for name in CHECKPOINT_FIELDS:
            cfg.model[name] = getattr(fitted, name)
    if not is_first_process() or not (changed or taken):
        return
    parts = []
    if changed:
        parts.append(f"not weights, the config's values used: {', '.join(changed)}")
    if taken:
        parts.append(f"taken from the checkpoint: {', '.join(taken)}")
    print(f"[mypt] {option}={path}: the model config differs from the checkpoint's ({'; '.join(parts)})", flush=True)
    if found.rope_scale != fitted.rope_scale and not cfg.phase.get("extends_context", False):
        warnings.warn(
            f"{option}={path}: rope_scale changes {found.rope_scale!r} -> {fitted.rope_scale!r} in "
            f"{cfg.phase.name}, which does not extend the context (only phase1b_context_ext does): the "
            f"weights were trained with positions scaled by {found.rope_scale!r}. Train phase1b_context_ext "
            f"first, or keep the checkpoint's value (model.rope_scale={found.rope_scale!r}, "
            f"e.g. model=gpt750m_base for the MyPT base)", UserWarning, stacklevel=2)


def resolve_run_id(output_dir: Path, resuming: bool) -> str:
    """The W&B run id of this run directory: reused when resuming, new otherwise."""
    info_path = output_dir / RUN_INFO
    if resuming and info_path.exists():
        return json.loads(info_path.read_text())["run_id"]
    return secrets.token_hex(4)  # 8 chars of [0-9a-f]: a valid W&B run id


def _write_run_info(output_dir: Path, cfg: DictConfig, init_from: str | None) -> None:
    info = {
        "run_id": cfg.run_id,
        "run_name": cfg.run_name,
        "phase": cfg.phase.name,
        "init_from": init_from,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }
    write_text_atomic(output_dir / RUN_INFO, json.dumps(info, indent=2))  # creates output_dir


def build_module(cfg: DictConfig, init_from: str | None, val_set_names: list[str]):
    from mypt_lightning.training.lit_module import MyPTLitModule

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    compile_model = bool(model_cfg.pop("compile", False))
    return MyPTLitModule(
        model=model_cfg,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        max_steps=cfg.train.max_steps,
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        init_from=init_from,
        compile=compile_model,
        max_consecutive_nonfinite=cfg.train.max_consecutive_nonfinite,
        val_set_names=val_set_names,
    )


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> dict:
    """Run one training job described by ``cfg``; returns the final metrics.

    ``extra_callbacks`` are added to the configured ones (programmatic use: notebooks, tests).
    At the end (rank 0) it writes ``<run dir>/plots/`` and prints a summary; the console
    output of the run also goes to ``<run dir>/run.log``.
    """
    validate_config(cfg)  # every key's type and range, before anything touches the disk
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None:
        check_resumable(ckpt_path)  # a damaged or unsafe file is named now, not after setup
    init_from = None if ckpt_path else resolve_init_from(cfg, output_dir)
    if init_from is not None:
        check_loadable(init_from)  # no pickled code, a readable format: named before anything is written
    if ckpt_path is not None or init_from is not None:  # the weights' architecture decides lm_head_bias
        fit_model_to_checkpoint(cfg, ckpt_path or init_from, "ckpt_path" if ckpt_path else "init_from")
    datamodule = check_datasets(cfg)
    # Last of the checks, first of the writes: a new run never lands on a previous one.
    claim_run_dir(output_dir, cfg.get("ckpt_path"), resuming=ckpt_path is not None,
                  overwrite=bool(cfg.get("overwrite", False)), run_name=cfg.run_name)
    check_output_dir(output_dir, estimate_checkpoint_bytes(count_parameters(cfg)))
    with open_dict(cfg):
        cfg.run_id = resolve_run_id(output_dir, resuming=ckpt_path is not None)
    if sweep_dir(cfg) is not None:
        with open_dict(cfg):  # every job of a sweep its own name: phase3_chat_sft-lr3e-5-neft5
            cfg.run_name = sweep_name(str(cfg.run_name))
    if is_first_process():  # ranks started alongside (torchrun, srun) must not look like a previous run
        _write_run_info(output_dir, cfg, init_from)

    run_log = capture_run_log(output_dir / "run.log") if is_first_process() else contextlib.nullcontext()
    with run_log:
        return _train_in_run_dir(cfg, output_dir, ckpt_path, init_from, datamodule, extra_callbacks)


def sweep_dir(cfg: DictConfig) -> Path | None:
    """The multirun's directory when this is one of its jobs, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(cfg.paths.output_dir).parent


def _train_in_run_dir(cfg: DictConfig, output_dir: Path, ckpt_path: str | None, init_from: str | None,
                      datamodule, extra_callbacks: list | None) -> dict:
    started = time.perf_counter()
    silence_known_noise()  # Lightning's adverts, the warnings we know are harmless (console.py lists them)
    L.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, init_from, datamodule.val_set_names)
    preemption = Preemption()  # stop signals: save at the step end, then stop (fault_tolerance)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [*(extra_callbacks or []), preemption]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    try:
        # weights_only: Lightning's resume unpickles only what check_resumable admitted above.
        with trusted_types():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DatasetFormatError as err:
        # A sample failed the reader's per-sample check (check_samples=True: e.g. a token id
        # beyond the vocabulary, which the start-up checks do not scan for). From a DataLoader
        # worker it arrives rebuilt from its text (DatasetFormatError's one-argument form).
        _finish_loggers(loggers)
        raise UserError(f"{err} (training stopped at step {trainer.global_step})") from None
    except SIGTERMException:  # a stop signal: last.ckpt saved at the step end (fault_tolerance)
        _finish_loggers(loggers)
        raise preemption.stopped_at_step_end(trainer.global_step, resume_hint(cfg, output_dir)) from None
    except SystemExit as exc:
        # Lightning ends a KeyboardInterrupt (a second Ctrl-C, or one before training started)
        # with sys.exit(1); keep Ctrl-C's exit code and say what was kept.
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        _finish_loggers(loggers)
        raise preemption.stopped_at_once(trainer.global_step, resume_hint(cfg, output_dir)) from None
    finally:
        preemption.uninstall()

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    fit_seconds = time.perf_counter() - started
    export_dir = output_dir / "export"
    gate = None
    if cfg.train.get("export", True) and not trainer.interrupted:
        from mypt_lightning.training.distributed import export_final_model

        export_final_model(trainer, module, export_dir, extra={"phase": cfg.phase.name, "global_step": trainer.global_step})
        if cfg.curriculum.get("run_gate", False) and trainer.is_global_zero:
            gate = run_phase_gate(cfg, export_dir)
            if gate is not None:
                metrics["gate_passed"] = float(gate["passed"])
                verdict = "PASSED" if gate["passed"] else "FAILED"
                print(f"[mypt] phase {gate['phase']} success gate {verdict}: {gate['report']}")
    _finish_loggers(loggers)
    if trainer.is_global_zero:
        _report(cfg, output_dir, trainer, module, loggers, gate, module.start_step, fit_seconds)
    return metrics


def _report(cfg, output_dir: Path, trainer, module, loggers, gate: dict | None, start_step: int,
            seconds: float) -> None:
    """Plots and the summary at the end of a run; neither may fail the run (a warning instead)."""
    from mypt_lightning.training.plots import write_run_plots
    from mypt_lightning.training.run_summary import RunFacts, print_summary

    plots = []
    try:
        plots = write_run_plots(output_dir, sweep_dir(cfg))
    except Exception as err:  # noqa: BLE001 - plotting must never cost a finished run
        warnings.warn(f"could not write the plots of {output_dir}: {type(err).__name__}: {err}; "
                      f"try `python tools/plot_run.py {output_dir}`")
    try:
        facts = RunFacts(
            run_name=str(cfg.run_name), output_dir=output_dir, global_step=trainer.global_step,
            max_steps=trainer.max_steps, start_step=start_step, seconds=seconds, tokens=module.tokens_trained,
            train_loss=module.last_step_metrics.get("train/loss"), val_metrics=dict(module.last_val_metrics),
            export_dir=output_dir / "export" if cfg.train.get("export", True) else None,
            logs=[f"{getattr(lg, 'log_dir', None) or getattr(lg, 'save_dir', None)} ({type(lg).__name__})"
                  for lg in loggers],
            plots=plots, interrupted=trainer.interrupted)
        if gate is not None:
            report = json.loads(Path(gate["report"]).read_text(encoding="utf-8"))
            # with curriculum.regression the report holds phases 1..N: this phase's gate is the last
            *facts.earlier_gates, facts.gate = report["gates"]
            facts.gate_where, facts.gate_report = "export/", Path(gate["report"])
        else:  # the gate run during training (callbacks=gate), if any
            from mypt_lightning.training.callbacks import GateCallback

            for callback in trainer.callbacks:
                if isinstance(callback, GateCallback) and callback.last_result is not None:
                    step, result = callback.last_result
                    facts.gate, facts.gate_where = result.to_dict(), f"step {step} (during training)"
        print_summary(facts)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"could not print the run summary: {type(err).__name__}: {err}")


def resume_hint(cfg: DictConfig, output_dir: Path) -> str:
    """How to continue a stopped run, for the one line printed when it stops."""
    if (output_dir / "checkpoints" / "last.ckpt").exists():
        return (f"resume with the same command plus ckpt_path=last "
                f"(run_name={cfg.run_name}, phase={cfg.phase.name})")
    return "no checkpoint to resume yet; start again with the same command plus overwrite=true"


def _finish_loggers(loggers) -> None:
    """Close W&B so the next job of a multirun starts its own run."""
    for logger in wandb_loggers(loggers):
        import wandb

        logger.finalize("success")
        wandb.finish()
