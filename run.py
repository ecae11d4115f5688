"""Train one curriculum phase (or a sweep of them) from the Hydra configs in conf/.

    python run.py phase=phase4_multiturn                      # one phase, init from phase 3's export
    python run.py experiment=cpu_demo                         # tiny model on CPU (see README)
    python run.py -m phase=phase3_chat_sft optim.lr=1e-5,3e-5 model.neftune_alpha=0,5
    python run.py phase=phase4_multiturn ckpt_path=last       # resume a killed run exactly
    python run.py phase=phase4_multiturn overwrite=true       # start again; the old run is moved aside
    python run.py --help                                      # config groups and options

SIGTERM or Ctrl-C: the run saves last.ckpt at the end of the step and exits 143 / 130
(a second Ctrl-C stops at once). Exit 2: a user error, shown as one line.
"""

import sys

import hydra
from omegaconf import DictConfig

import mypt_lightning.config  # noqa: F401  (registers the ${mypt.*} resolvers)
from mypt_lightning.errors import user_errors
from mypt_lightning.training.fault_tolerance import INTERRUPTED_EXIT_CODE, Preempted


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mypt_lightning.training.train import train

    try:
        metrics = train(cfg)
    except user_errors() as err:  # bad config or dataset, a full disk, a read-only output...
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stop:  # SIGTERM / Ctrl-C / a requeue signal: 143, 130 after Ctrl-C
        print(f"[mypt] {stop}", file=sys.stderr)
        if stop.handoff is not None:
            stop.handoff.hand_over()  # under submitit: requeue the job (and exit there)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside the training steps (setup, export, the gate)
        print("[mypt] interrupted (Ctrl-C) outside the training steps; nothing new was saved", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    return metrics.get("val_loss")


if __name__ == "__main__":
    main()
