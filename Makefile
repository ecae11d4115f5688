# The two commands of the README. Both set up .venv first (idempotent).
PY := .venv/bin/python
DEMO := data/demo

.PHONY: setup demo demo-data curriculum-data curriculum-demo test test-all test-fast

setup:
	@bash tools/setup_env.sh

# A tiny model trained from scratch on CPU on a generated phase-1 dataset until it passes
# the phase-1 success gate (conf/experiment/cpu_phase1_gate.yaml); prints a summary at the end.
demo: setup demo-data
	$(PY) run.py experiment=cpu_phase1_gate overwrite=true

# DEMO_RECIPE names the recipe below: data/demo built by an older one is rebuilt, not reused.
DEMO_RECIPE := 3
demo-data: setup
	@if [ ! -d $(DEMO)/sft_phase1_format_lock ] || [ "$$(cat $(DEMO)/demo_recipe.txt 2>/dev/null)" != "$(DEMO_RECIPE)" ]; then \
	  $(PY) tools/generate_format_lock_dataset.py --output $(DEMO)/format_lock.jsonl --num_examples 4200 --seed 0 --language mixed --de_share 0.6 && \
	  $(PY) tools/generate_echo_dataset.py --output $(DEMO)/echo.jsonl --num_examples 1800 --seed 0 --language mixed && \
	  $(PY) tools/generate_format_lock_dataset.py --mode simple --output $(DEMO)/simple.jsonl --num_examples 3000 --seed 1 --language mixed --de_share 0.6 && \
	  $(PY) tools/mix_sft_jsonl.py --inputs $(DEMO)/format_lock.jsonl:1.0 $(DEMO)/echo.jsonl:1.0 $(DEMO)/simple.jsonl:1.0 \
	    --output $(DEMO)/phase1_mixed.jsonl --shuffle --seed 0 && \
	  $(PY) tools/prepare_sft.py --input $(DEMO)/phase1_mixed.jsonl --output_dir $(DEMO)/sft_phase1_format_lock \
	    --val_split 0.05 --enable_packing --pack_block_size 512 --weighted_mask --overwrite && \
	  echo $(DEMO_RECIPE) > $(DEMO)/demo_recipe.txt ; \
	else echo "[demo] using existing $(DEMO)/sft_phase1_format_lock (recipe $(DEMO_RECIPE))"; fi

# The data of both curriculum-demo phases: the phase-1 demo data, phase 2's operators dataset
# (conf/data_recipe/phase2_operators.yaml) and the pre-training replay stand-in that both phases'
# data mixes replay (built from the bundled workspace documents: a demo, not real pre-training text).
curriculum-data: demo-data
	$(PY) tools/prepare_phase.py phase=phase2_operators model=tiny model.block_size=512 paths.data_dir=$(DEMO) \
	  data_recipe.num_examples=40000 --with_replay data_recipe.pretrain_replay.num_examples=2000

# Phase 1 then phase 2 (initialised from phase 1's export), each judged by its gate, on CPU
# (conf/experiment/cpu_curriculum.yaml; the README gives the measured time).
curriculum-demo: setup curriculum-data
	$(PY) run.py -m experiment=cpu_curriculum phase=phase1_format_lock,phase2_operators paths.data_dir=$(DEMO)

# The suite CI runs: slow tests included, the CPU curriculum (marker `curriculum`) left out.
# -v names each test as it starts (a long one is visible while it runs); --durations lists
# the slowest at the end.
test: setup
	$(PY) -m pytest -v --durations=25 -m "not curriculum"

# Everything, the CPU curriculum proof included (tests/test_curriculum_cpu.py).
test-all: setup
	$(PY) -m pytest -v --durations=25

# Without the slow tests (the CPU gate proof, torch.compile): for quick iterations.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"
