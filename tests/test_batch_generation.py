"""Batched decoding (batch_generation.generate_batch): every row equals its prompt decoded alone."""

from __future__ import annotations

import pytest
import torch

from helpers import write_jsonl
from mypt_lightning.inference.batch_generation import GenerationRequest, default_batch_size, generate_batch
from mypt_lightning.inference.generation import ModelPolicy, SamplingConfig, generate
from mypt_lightning.model import ATTN_IMPLS, MyPT, MyPTConfig

VOCAB = 512  # a small head keeps the tests fast; decoding does not depend on the vocab size
LENGTHS = (1, 2, 9, 40, 150)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread avoids OpenMP stalls on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_model(attn_impl: str = "auto", seed: int = 0, block_size: int = 256) -> MyPT:
    """Large random weights: greedy outputs vary from token to token (no near-ties)."""
    torch.manual_seed(seed)
    model = MyPT(MyPTConfig.tiny(vocab_size=VOCAB, n_embd=64, n_head=4, n_layer=2, block_size=block_size,
                                 attn_impl=attn_impl))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def prompts(lengths=LENGTHS, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def test_padded_forward_equals_each_row_alone():
    """The model itself: logits of a left-padded batch (pad_lengths) == each row unpadded."""
    model = random_model()
    rows = prompts((3, 11, 7))
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pads = torch.tensor([width - len(r) for r in rows])
    for b, r in enumerate(rows):
        ids[b, pads[b]:] = torch.tensor(r)
    with torch.no_grad():
        batched = model(ids, pad_lengths=pads)
        for b, r in enumerate(rows):
            alone = model(torch.tensor([r]))[0]
            torch.testing.assert_close(batched[b, pads[b]:], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_greedy_batch_equals_each_prompt_alone(attn_impl):
    """Prompts of 1..150 tokens in one batch, per-row stop ids (hit at different steps) and
    budgets: token for token what generate() gives each prompt alone, on every attention path."""
    model = random_model(attn_impl)
    ps = prompts()
    config = SamplingConfig(max_new_tokens=24, stop_ids=frozenset())
    free = [generate(model, p, config).tokens for p in ps]
    assert all(len(set(t)) > 5 for t in free), "degenerate test: a row repeats one token"
    # row k stops at its own token number 3k+2 (row 4 never: its stop id is one it never makes);
    # rows 1 and 3 get smaller budgets
    stop_ids = [frozenset({free[k][3 * k + 2]}) if k < 4 else frozenset({VOCAB - 1}) - set(free[k])
                for k in range(len(ps))]
    budgets = [None, 20, None, 7, None]
    requests = [GenerationRequest(p, max_new_tokens=m, stop_ids=s) for p, m, s in zip(ps, budgets, stop_ids)]
    alone = [generate(model, p, config, max_new_tokens=m, stop_ids=s) for p, m, s in zip(ps, budgets, stop_ids)]
    batched = generate_batch(model, requests, config)
    for a, b in zip(alone, batched):
        assert (b.tokens, b.stop_reason, b.stopped_on, b.prompt_length) == \
               (a.tokens, a.stop_reason, a.stopped_on, a.prompt_length)
    assert [b.stop_reason for b in batched][:4] == ["stop_token", "stop_token", "stop_token", "max_new_tokens"]
    assert len({len(b.tokens) for b in batched}) >= 4  # the rows really ended at different steps


def test_context_full_row_next_to_a_short_prompt():
    """A prompt near block_size runs out of context while a short one keeps its full budget;
    the cache then has more columns than block_size, positions never do."""
    model = random_model(block_size=64)
    ps = prompts((60, 3))
    config = SamplingConfig(max_new_tokens=50, stop_ids=frozenset())
    alone = [generate(model, p, config) for p in ps]
    batched = generate_batch(model, ps, config)
    assert [r.stop_reason for r in batched] == ["context_full", "max_new_tokens"]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]


def test_sampling_with_a_seed_draws_what_each_prompt_alone_draws():
    model = random_model()
    ps = prompts()
    config = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.3,
                            seed=7, stop_ids=frozenset())
    alone = [generate(model, p, config).tokens for p in ps]
    assert [r.tokens for r in generate_batch(model, ps, config)] == alone
    assert [r.tokens for r in generate_batch(model, ps[::-1], config)] == alone[::-1]  # neighbours do not matter


def test_repetition_penalty_greedy():
    model = random_model()
    ps = prompts()
    config = SamplingConfig(max_new_tokens=20, repetition_penalty=1.5, stop_ids=frozenset())
    assert [r.tokens for r in generate_batch(model, ps, config)] == [generate(model, p, config).tokens for p in ps]


def test_finished_rows_leave_the_batch():
    """After a row stops, later forwards run on fewer rows (and the padding only the
    finished long row needed is dropped from the cache)."""
    model = random_model()
    ps = prompts((150, 2, 5))
    config = SamplingConfig(max_new_tokens=12, stop_ids=frozenset())
    first = generate(model, ps[0], config).tokens
    shapes = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: shapes.append(
        (tuple(args[0].shape), kwargs["kv_cache"].k.shape[3])), with_kwargs=True)
    try:
        requests = [GenerationRequest(ps[0], stop_ids=frozenset({first[2]}))] + ps[1:]
        results = generate_batch(model, requests, config)
    finally:
        handle.remove()
    assert results[0].tokens == first[:3]
    rows = [s[0][0] for s in shapes]
    assert rows == [3, 3, 3] + [2] * (len(shapes) - 3)
    assert shapes[3][1] < shapes[2][1] - 140  # the long row's padding columns are gone


def test_chunks_keep_the_order_and_on_token_sees_each_rows_tokens():
    model = random_model()
    ps = prompts((5, 30, 2, 17, 9))
    config = SamplingConfig(max_new_tokens=10, stop_ids=frozenset())
    seen = {i: [] for i in range(len(ps))}
    requests = [GenerationRequest(p, on_token=seen[i].append) for i, p in enumerate(ps)]
    results = generate_batch(model, requests, config, batch_size=2)
    assert [r.tokens for r in results] == [generate(model, p, config).tokens for p in ps]
    assert [seen[i] for i in range(len(ps))] == [r.tokens for r in results]


def test_model_policy_batch_and_train_mode_restored():
    model = random_model().train()
    policy = ModelPolicy(model, SamplingConfig(max_new_tokens=8, stop_ids=frozenset()))
    ps = prompts((4, 12))
    out = policy.generate_batch([GenerationRequest(p) for p in ps])
    assert model.training
    assert [r.tokens for r in out] == [policy(p).tokens for p in ps]


def test_no_cache_falls_back_to_one_prompt_at_a_time():
    model = random_model()
    ps = prompts((3, 20))
    config = SamplingConfig(max_new_tokens=6, use_kv_cache=False, stop_ids=frozenset())
    assert [r.tokens for r in generate_batch(model, ps, config)] == [generate(model, p, config).tokens for p in ps]


def test_bad_input():
    model = random_model(block_size=32)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_batch(model, [[1], []])
    with pytest.raises(ValueError, match="prompt 0 has 32 tokens"):
        generate_batch(model, [[1] * 32])
    with pytest.raises(ValueError, match="batch_size"):
        generate_batch(model, [[1]], batch_size=0)
    assert default_batch_size("cpu") >= 8 and default_batch_size() == default_batch_size("cpu")


def _generate_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_cli_batch_file(tmp_path, capsys):
    """tools/generate.py --batch_file: every line's output equals generating for it alone."""
    import json

    from mypt_lightning.weights.checkpoint import save_exported
    from mypt_lightning.inference.generation import encode_with_tags
    from mypt_lightning.tokens.protocol import build_prompt
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(n_embd=64, n_head=4, n_layer=2, block_size=256))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    save_exported(model, tmp_path / "model")
    tok = get_tokenizer()
    lines = [{"prompt": "<myPT_user>Say hello.</myPT_user><myPT_assistant>"},
             {"user": "Wie viel kostet ein Hotel?", "system": "You are MyPT."},
             {"user": "What does it say?", "context": "The hotel allowance is 150 euros per night."}]
    batch = tmp_path / "prompts.jsonl"
    write_jsonl(batch, [*lines[:2], "", lines[2]])  # a blank line 3: the line numbers count it
    tool = _generate_tool()
    code = tool.main(["--model", str(tmp_path / "model"), "--batch_file", str(batch), "--max_new_tokens", "10",
                      "--batch_size", "2", "--device", "cpu", "--output", str(tmp_path / "out.jsonl")])
    assert code == 0, capsys.readouterr().err
    got = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    prompts = [encode_with_tags(lines[0]["prompt"], tok),
               build_prompt([{"role": "user", "content": lines[1]["user"]}], system="You are MyPT.", tokenizer=tok),
               # no "system" and no --system: the prompt the model was trained with (phase 1's, no phase known)
               build_prompt([{"role": "user", "content": lines[2]["user"], "context": lines[2]["context"]}],
                            system="You are MyPT.", tokenizer=tok)]
    expected = [generate(model, p, SamplingConfig(max_new_tokens=10)) for p in prompts]
    assert [g["line"] for g in got] == [1, 2, 4]
    assert [g["output"] for g in got] == [tok.decode(e.tokens) for e in expected]
    assert [g["stop_reason"] for g in got] == [e.stop_reason for e in expected]
    assert "3 prompts" in capsys.readouterr().err

    write_jsonl(batch, [lines[0], {"user": 5}])
    assert tool.main(["--model", str(tmp_path / "model"), "--batch_file", str(batch)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{batch}:2" in err and "must be a string" in err
