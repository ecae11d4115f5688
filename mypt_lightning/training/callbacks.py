"""Lightning callbacks: run a phase's success gate while training.

``GateCallback(phase=1)`` runs the gate after validation (every ``every_n_validations``
validations, on global rank 0) with greedy decoding on the model being trained, and

* logs ``gate/phase1/pass_rate``, every other gate metric and ``gate/phase1/passed``
  (1.0 / 0.0) to every logger at the current optimizer step, and puts them into
  ``trainer.callback_metrics`` (so ``train()`` returns them and ModelCheckpoint can monitor them);
* logs a table of samples (prompt, output, verdict, reason): ``WandbLogger.log_table``
  when W&B is on, otherwise ``<run dir>/gates/phase1_step000100.json`` (the full gate
  result) plus ``<run dir>/gates/phase1_samples.csv`` (one row per case per run, appended).

Enable it with the config option ``callbacks=gate`` (``conf/callbacks/gate.yaml``: the
default callbacks plus this one, for the phase being trained). ``regression=True``
(``callbacks.gate.regression=true``) also runs every earlier phase's gate at the same steps
and logs it under its own prefix (``gate/phase1/...`` while phase 2 trains), so forgetting
shows as a falling curve while it happens. Generation on rank 0 only:
with FSDP (sharded weights) the callback warns and does nothing.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import torch

from data_modules.atomic_write import write_json_atomic
from mypt_lightning.gates.runner import get_gate, parse_phase
from mypt_lightning.training.distributed import is_fsdp
from mypt_lightning.training.loggers import wandb_loggers

TABLE_COLUMNS = ["step", "id", "category", "language", "verdict", "prompt", "output", "reason"]


def _optional_int(name: str, value, minimum: int):
    """``value`` if it is None or an integer >= ``minimum`` (a bool is not one), else ValueError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum} or null, got {value!r}")
    return value


class GateCallback(L.Callback):
    """Run phase ``phase``'s gate at validation and log its pass rates and sample table.

    Args:
        phase: 1-6 or a phase name ("phase3_chat_sft"); ``${phase.number}`` in the config.
        every_n_validations: run on every n-th validation (1 = every one).
        max_cases: at most this many cases per run (evenly spread), None = all.
        table_rows: cases shown in the sample table (the failed ones first).
        output_dir: where the JSON/CSV go without W&B (default: the trainer's default_root_dir).
        workspace: docs folder for the phase 3-6 gates (default: the bundled workspace).
        batch_size: cases decoded together (None = the device's default, 1 = one at a time).
        regression: also run the gates of phases 1..phase-1 (logged as ``gate/phase<k>/...``).
        stop_on_pass_from_step: a step: end training at the first validation at or after it
            where every gate run passes (the export is then the model that passed; max_steps
            stays the upper bound). None: train to max_steps.
    """

    def __init__(self, phase: int | str, every_n_validations: int = 1, max_cases: int | None = None,
                 table_rows: int = 30, output_dir: str | None = None, workspace: str | None = None,
                 protocol: str = "ours", batch_size: int | None = None, regression: bool = False,
                 stop_on_pass_from_step: int | None = None):
        super().__init__()
        from mypt_lightning.tokens.protocol_profiles import get_profile

        self.protocol = get_profile(protocol)  # the format of the model's training data (legacy MyPT: mypt_chat/...)
        self.phase = parse_phase(phase)
        self.gate = get_gate(self.phase)
        # the gates run at each validation: the earlier phases' first (regression), this phase's last
        earlier = range(1, self.phase) if regression else ()
        self.gates = [*(get_gate(p) for p in earlier), self.gate]
        if every_n_validations < 1:
            raise ValueError(f"every_n_validations must be >= 1, got {every_n_validations}")
        self.every_n_validations = every_n_validations
        self.max_cases = max_cases
        self.table_rows = table_rows
        self.output_dir = output_dir
        self.workspace_dir = workspace
        self.batch_size = _optional_int("batch_size", batch_size, 1)
        # (not Lightning's min_steps: with it, Lightning also waits for a whole epoch, and an epoch of
        # the epoch-sampled data can be longer than the run)
        self.stop_on_pass_from_step = _optional_int("stop_on_pass_from_step", stop_on_pass_from_step, 0)
        self._all_passed = False  # every gate of the latest run passed
        self._workspace = None
        self._validations = 0
        self._warned = False
        self.history: list[tuple[int, dict[str, float]]] = []  # (step, metrics) per run
        self.last_result = None  # (step, GateResult) of this phase's latest run (the end-of-run summary shows it)

    @staticmethod
    def _prefix(gate) -> str:
        return f"gate/phase{gate.phase}"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        if is_fsdp(trainer.strategy):
            if not self._warned:
                warnings.warn("GateCallback: the model is sharded (FSDP); gates are not run during training. "
                              "Run tools/eval_gates.py on the exported model instead.")
                self._warned = True
            return
        if trainer.is_global_zero:
            self.run_gate(trainer, pl_module)
        if self.stop_on_pass_from_step is not None:
            # The gates run on rank 0 only; every rank must take the same decision or DDP hangs.
            done = self._all_passed and trainer.global_step >= self.stop_on_pass_from_step
            if trainer.strategy.broadcast(done, src=0):
                trainer.should_stop = True
                from mypt_lightning.training.console import emit

                emit(f"[mypt] step {trainer.global_step}: the gate passed, training stops here "
                     f"(callbacks.gate.stop_on_pass_from_step={self.stop_on_pass_from_step}; max_steps {trainer.max_steps})")

    def run_gate(self, trainer: L.Trainer, pl_module: L.LightningModule):
        """Run every gate of this callback on the model being trained; this phase's result."""
        from mypt_lightning.inference.generation import ModelPolicy, SamplingConfig

        model = pl_module.model
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper: generate with the plain module
        if any(g.needs_workspace for g in self.gates) and self._workspace is None:
            from mypt_lightning.workspace.store import Workspace

            self._workspace = Workspace(self.workspace_dir)
        was_training = model.training
        step = trainer.global_step
        result = None
        self._all_passed = False
        try:
            results = []
            for gate in self.gates:
                result = gate.run(ModelPolicy(model, SamplingConfig(temperature=0.0)), workspace=self._workspace,
                                  max_cases=self.max_cases, protocol=self.protocol, batch_size=self.batch_size)
                self._record(trainer, gate, result, step)
                results.append(result)
            self._all_passed = all(r.passed for r in results)
        finally:
            model.train(was_training)
        self.last_result = (step, result)
        return result

    def _record(self, trainer: L.Trainer, gate, result, step: int) -> None:
        """Log one gate's metrics and samples, and print its one-line verdict."""
        prefix = self._prefix(gate)
        metrics = {f"{prefix}/{k}": float(v) for k, v in result.metrics.items()}
        metrics[f"{prefix}/passed"] = 1.0 if result.passed else 0.0
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if gate is self.gate:
            self.history.append((step, metrics))
        from mypt_lightning.training.console import emit

        judged = [c.metric for c in gate.criteria if c.metric in result.metrics]  # what the verdict rests on
        rates = " ".join(f"{m} {result.metrics[m]:.2f}" for m in judged)
        kind = "" if gate is self.gate else " (regression)"
        emit(f"[mypt] step {step} gate phase {gate.phase}{kind}: {'PASS' if result.passed else 'FAIL'} ({rates})")
        self._log_samples(trainer, result, step, gate)

    def _rows(self, result, step: int) -> list[list]:
        cases = sorted(result.cases, key=lambda c: c.passed)[: self.table_rows]  # failures first
        return [[step, c.id, c.category, c.language, c.verdict, c.prompt, c.output, c.reason] for c in cases]

    def _log_samples(self, trainer: L.Trainer, result, step: int, gate=None) -> None:
        gate = gate or self.gate
        rows = self._rows(result, step)
        wandb = wandb_loggers(trainer.loggers)
        for logger in wandb:
            logger.log_table(key=f"{self._prefix(gate)}/samples", columns=TABLE_COLUMNS, data=rows, step=step)
        if wandb:
            return
        out = Path(self.output_dir or trainer.default_root_dir) / "gates"
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"phase{gate.phase}_step{step:06d}.json", {"step": step, **result.to_dict()},
                          ensure_ascii=False)
        table = out / f"phase{gate.phase}_samples.csv"
        new = not table.exists()
        with open(table, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(TABLE_COLUMNS)
            writer.writerows(rows)


__all__ = ["GateCallback", "TABLE_COLUMNS"]
