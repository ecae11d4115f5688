"""Data preparation: JSONL episodes (docs/design.md section 1) -> binary episode datasets (docs/design.md section 2).

One home per step; the scripts in ``tools/`` are thin command lines over these modules::

    jsonl        streaming JSONL reading with file:line errors, --on-error accounting, atomic writes
    textnorm     text normalisation, stable 64-bit hashes, a tiny EN/DE language guess
    split        deterministic by-conversation train/val split and the overlap report
    prepare      prepare_sft: validate, split, tokenize on all cores, pack, write a dataset
    mixing       mix JSONL files by ratio (oversampling above 1.0), provenance in _meta.source
    hf_convert   Hugging Face datasets (OASST2, Alpaca, ShareGPT, messages, Dolci tool use,
                 German function calling) -> episodes
    inspect      human-readable samples and statistics of a binary dataset
    validate     named integrity / mask / structure checks of a binary dataset
    dedup        exact and normalised-user-message deduplication
    diversity    distinct n-grams, template signatures, language mix
    augment      rule-based EN/DE paraphrase of user messages
    translation  extract / recombine / merge bilingual episodes, and a DeepL client
    synthetic    synthetic episodes with phase-like length profiles (benchmarks, tests)
    phase_pipeline  prepare_phase: generate -> mix -> prepare -> validate per curriculum phase
"""
