# The two commands of the README. Both set up .venv first (idempotent).
PY := .venv/bin/python
DEMO := data/demo

.PHONY: setup demo demo-data test test-fast

setup:
	@bash tools/setup_env.sh

# Tiny model, CPU, a few minutes, on a generated phase-1 dataset.
demo: setup demo-data
	$(PY) run.py experiment=cpu_demo

demo-data: setup
	@if [ ! -d $(DEMO)/sft_phase1_format_lock ]; then \
	  $(PY) tools/generate_format_lock_dataset.py --output $(DEMO)/format_lock.jsonl --num_examples 4200 --seed 0 --language mixed && \
	  $(PY) tools/generate_echo_dataset.py --output $(DEMO)/echo.jsonl --num_examples 1800 --seed 0 --language mixed && \
	  $(PY) tools/mix_sft_jsonl.py --inputs $(DEMO)/format_lock.jsonl:1.0 $(DEMO)/echo.jsonl:1.0 --output $(DEMO)/phase1_mixed.jsonl --shuffle --seed 0 && \
	  $(PY) tools/prepare_sft.py --input $(DEMO)/phase1_mixed.jsonl --output_dir $(DEMO)/sft_phase1_format_lock \
	    --val_split 0.05 --enable_packing --pack_block_size 512 --weighted_mask ; \
	else echo "[demo] using existing $(DEMO)/sft_phase1_format_lock"; fi

# The whole suite, slow tests included (what CI runs; ~6 min on 2 idle cores).
# -v names each test as it starts (a long one is visible while it runs); --durations lists
# the slowest at the end.
test: setup
	$(PY) -m pytest -v --durations=25

# Without the slow tests (the CPU gate proof, torch.compile): for quick iterations.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"
