# The two commands of the README. Both set up .venv first (idempotent).
PY := .venv/bin/python
DEMO := data/demo

.PHONY: setup demo demo-data test test-fast

setup:
	@bash tools/setup_env.sh

# A tiny model trained from scratch on CPU on a generated phase-1 dataset until it passes
# the phase-1 success gate (conf/experiment/cpu_phase1_gate.yaml); prints a summary at the end.
demo: setup demo-data
	$(PY) run.py experiment=cpu_phase1_gate overwrite=true

demo-data: setup
	@if [ ! -d $(DEMO)/sft_phase1_format_lock ]; then \
	  $(PY) tools/generate_format_lock_dataset.py --output $(DEMO)/format_lock.jsonl --num_examples 4200 --seed 0 --language mixed --de_share 0.5 && \
	  $(PY) tools/generate_echo_dataset.py --output $(DEMO)/echo.jsonl --num_examples 1800 --seed 0 --language mixed && \
	  $(PY) tools/mix_sft_jsonl.py --inputs $(DEMO)/format_lock.jsonl:1.0 $(DEMO)/echo.jsonl:1.0 --output $(DEMO)/phase1_mixed.jsonl --shuffle --seed 0 && \
	  $(PY) tools/prepare_sft.py --input $(DEMO)/phase1_mixed.jsonl --output_dir $(DEMO)/sft_phase1_format_lock \
	    --val_split 0.05 --enable_packing --pack_block_size 512 --weighted_mask ; \
	else echo "[demo] using existing $(DEMO)/sft_phase1_format_lock"; fi

# The whole suite, slow tests included (what CI runs; see the README for measured times).
# -v names each test as it starts (a long one is visible while it runs); --durations lists
# the slowest at the end.
test: setup
	$(PY) -m pytest -v --durations=25

# Without the slow tests (the CPU gate proof, torch.compile): for quick iterations.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"
