"""Phase pipelines: one command builds the training dataset of a curriculum phase.

    python tools/prepare_phase.py phase=phase3_chat_sft [--dry_run] [--force] [--with_replay]
        [--pretrain_sources PATH ...] [--with_deps] [data_recipe.num_examples=2000 ...]

The recipe is ``conf/data_recipe/<phase>.yaml``, composed inside the training config tree
(``conf/train.yaml``), so the pipeline writes exactly the dataset the training run reads
(``phase.dataset_dir``)::

    generate  every enabled source of the recipe -> <work_dir>/<source>.jsonl
              generator: a generator module, in-process       (tools/generate_*.py)
              pretrain_text: pre-training shards/text        (tools/generate_pretrain_replay.py)
              hf: a Hugging Face dataset or local copy       (tools/convert_hf_dataset.py)
              jsonl: a file you already have                 (no step)
    mix       the sources at their shares of the phase's OWN data (by records, or by
              tokens for phase 1b) -> <work_dir>/<phase>_mixed.jsonl   (tools/mix_sft_jsonl.py)
    prepare   validate, split, tokenize, pack -> phase.dataset_dir     (tools/prepare_sft.py)
    validate  the named checks of the written dataset         (tools/validate_sft_dataset.py)

Cross-phase and pre-training replay are not mixed into the JSONL: docs/design.md sections 4-5 mixes the
prepared datasets at training time (``conf/data_mix/<phase>.yaml``), so a replay share can
be swept without re-tokenizing. ``with_replay`` adds the steps that build the shared
pre-training replay dataset, ``with_deps`` the pipelines of the earlier phases whose
datasets the phase's data_mix needs and that are missing.

Every step has the equivalent ``python tools/...`` command line; a step whose output is up to
date is skipped (the rules are in ``skipping``). The modules::

    recipe     the composed config tree and the recipe's checked sources
    plan       Plan, Step (with its fingerprint), PhaseTarget
    commands   the equivalent command lines, a generator's checked arguments
    planner    build_plan: the steps of a phase, of the replay dataset, of missing earlier phases
    actions    what a step runs, in-process: generate, convert, mix, prepare, validate
    skipping   the fingerprints kept on disk and decide(): which steps run
    runner     execute() a plan and summarize() the result
"""

from .actions import measure_tokens
from .commands import generator_argv, python_command
from .plan import PhaseTarget, Plan, Step
from .planner import FALLBACK_TOKEN_BUDGET, build_plan, plan_phase, plan_replay, pretrain_inputs
from .recipe import CONF_DIR, GENERATOR_TOOLS, HF_ARGS, REPO_ROOT, SOURCE_KEYS, Source, compose_config, parse_sources
from .runner import execute, summarize
from .skipping import FINGERPRINT_TAG, STATE_FILE, decide

__all__ = ["CONF_DIR", "FALLBACK_TOKEN_BUDGET", "FINGERPRINT_TAG", "GENERATOR_TOOLS", "HF_ARGS", "REPO_ROOT",
           "SOURCE_KEYS", "STATE_FILE", "Plan", "PhaseTarget", "Source", "Step", "build_plan", "compose_config",
           "decide", "execute", "generator_argv", "measure_tokens", "parse_sources", "plan_phase", "plan_replay",
           "pretrain_inputs", "python_command", "summarize"]
