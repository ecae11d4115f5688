"""Training-data generators for every phase of the MyPT curriculum (EN + DE).

One module per generator, each with ``generate(...) -> Generated`` (records + statistics,
deterministic for a seed) and ``main(argv)``; ``tools/<name>.py`` are thin wrappers:

    format_lock        phase 1   tools/generate_format_lock_dataset.py
    echo               phase 1   tools/generate_echo_dataset.py
    operators          phase 2   tools/generate_operator_dataset.py
    rag_chat           phase 3   tools/generate_rag_chat_sft.py
    multiturn          phase 4   tools/generate_multiturn_sft.py
    agent              phase 5   tools/generate_agent_sft.py
    tool_episodes      phase 6   tools/generate_sft_tool_episodes.py
    pretrain_replay    all       tools/generate_pretrain_replay.py
    context_extension  phase 1b  tools/build_context_extension_dataset.py

Shared helpers live in ``common`` (seeding, language plans, records, stats, CLI, atomic
output), ``qa_bank`` (grounded facts about the workspace documents) and ``general_qa``
(questions that need no tool).
"""
