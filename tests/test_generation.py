"""Generation: parity with transformers' generate, KV cache == no cache, stops, sampling, streaming, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mypt_lightning.weights.checkpoint import save_exported
from mypt_lightning.inference.generation import (
    GenerationResult,
    IncrementalDecoder,
    ModelPolicy,
    SamplingConfig,
    TextPolicy,
    TokenStream,
    encode_with_tags,
    generate,
    process_logits,
    select_token,
)
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.tokens.protocol import build_prompt
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, ENDOFTEXT_ID, EOT, TOKENIZER_VOCAB_SIZE, VOCAB_SIZE
from mypt_lightning.tokens.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
UNUSED = list(range(TOKENIZER_VOCAB_SIZE, VOCAB_SIZE))


def random_model(seed: int = 0, rope_scale: float = 1.0, block_size: int = 256) -> MyPT:
    """A tiny model with large random weights, so greedy outputs vary from token to token."""
    torch.manual_seed(seed)
    model = MyPT(MyPTConfig.tiny(n_embd=64, n_head=4, n_layer=2, block_size=block_size, rope_scale=rope_scale))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(our model, its HF LlamaForCausalLM, the export folder)."""
    transformers = pytest.importorskip("transformers")
    from mypt_lightning.weights.hf_export import export_hf

    d = tmp_path_factory.mktemp("gen")
    model = random_model(rope_scale=4.0)
    save_exported(model, d / "ours")
    export_hf(d / "ours", d / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(d / "hf").eval()
    return model, hf, d / "ours"


PROMPTS = [
    [50257, 1639, 389, 2011, 11571, 13, 50258, 50259, 25515, 23748, 13, 50260, 50261],  # system + "Say hello."
    list(range(300, 340)),
    [50259, 40, 588, 4771, 50260, 50261],
]


def hf_generate(hf, prompt, n, **kwargs):
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=[EOT, ENDOFTEXT_ID],
                      pad_token_id=ENDOFTEXT_ID, **kwargs)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_equal_transformers_generate(exported, prompt):
    model, hf, _ = exported
    ours = generate(model, prompt, SamplingConfig(max_new_tokens=40, suppress_unused=False)).tokens
    theirs = hf_generate(hf, prompt, 40)
    assert len(set(ours)) > 5, "degenerate test: the model repeats one token"
    assert ours == theirs


def test_greedy_parity_with_repetition_penalty_and_suppressed_rows(exported):
    model, hf, _ = exported
    prompt = PROMPTS[1]
    ours = generate(model, prompt, SamplingConfig(max_new_tokens=40, repetition_penalty=1.3)).tokens
    theirs = hf_generate(hf, prompt, 40, repetition_penalty=1.3, suppress_tokens=UNUSED)
    assert ours == theirs


@pytest.mark.parametrize("prompt", PROMPTS)
def test_kv_cache_gives_the_same_tokens_as_no_cache(prompt):
    model = random_model(seed=1)
    with_cache = generate(model, prompt, max_new_tokens=60)
    without = generate(model, prompt, max_new_tokens=60, use_kv_cache=False)
    assert with_cache.tokens == without.tokens
    assert with_cache.stop_reason == without.stop_reason


def test_kv_cache_logits_match_full_forward():
    model = random_model(seed=2)
    ids = torch.randint(0, 50000, (1, 30))
    full = model(ids)
    cache = model.new_kv_cache(1, 30)
    steps = [model(ids[:, :10], kv_cache=cache)[0, -1]]
    steps += [model(ids[:, t:t + 1], kv_cache=cache)[0, -1] for t in range(10, 30)]
    torch.testing.assert_close(torch.stack(steps[1:]), full[0, 10:30], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(steps[0], full[0, 9], rtol=1e-4, atol=1e-4)


def test_seeded_sampling_is_reproducible_and_cache_independent():
    model = random_model(seed=3)
    cfg = SamplingConfig(max_new_tokens=30, temperature=0.9, top_k=50, top_p=0.95, seed=7)
    a = generate(model, PROMPTS[1], cfg).tokens
    b = generate(model, PROMPTS[1], cfg).tokens
    c = generate(model, PROMPTS[1], cfg.with_(use_kv_cache=False)).tokens
    d = generate(model, PROMPTS[1], cfg.with_(seed=8)).tokens
    assert a == b == c
    assert a != d


def test_generation_restores_training_mode_and_grad_mode():
    model = random_model(seed=4).train()
    stream = TokenStream(model, PROMPTS[2], SamplingConfig(max_new_tokens=5))
    next(stream)
    assert torch.is_grad_enabled()  # the suspended stream does not leak no_grad
    stream.result()
    assert model.training


# ----------------------------------------------------------------------------- stops


class ScriptedLM(nn.Module):
    """Emits ``script`` (one id per step, then id 0) whatever the input: for stop handling."""

    def __init__(self, script, prompt_len, block_size=64):
        super().__init__()
        self.script, self.prompt_len = list(script), prompt_len
        self.config = SimpleNamespace(block_size=block_size, vocab_size=VOCAB_SIZE)
        self.embed = nn.Embedding(1, 1)
        self.calls = 0

    def new_kv_cache(self, batch_size, max_seq_len):
        return SimpleNamespace(length=0)

    def forward(self, ids, kv_cache=None, predict_mask=None):
        self.calls += 1
        end = ids.shape[1] + (kv_cache.length if kv_cache is not None else 0)
        if kv_cache is not None:
            kv_cache.length = end
        k = end - self.prompt_len
        logits = torch.zeros(1, ids.shape[1], VOCAB_SIZE)
        logits[0, -1, self.script[k] if k < len(self.script) else 0] = 10.0
        return logits if predict_mask is None else logits[predict_mask]  # as MyPT: (N, vocab)


def run_script(script, prompt_len=4, block_size=64, **cfg):
    model = ScriptedLM(script, prompt_len, block_size)
    streamed = []
    result = generate(model, list(range(1, prompt_len + 1)), SamplingConfig(**cfg), on_token=streamed.append)
    assert streamed == result.tokens
    return result


def test_stops_at_eot_including_it():
    r = run_script([10, 11, ASSISTANT_CLOSE, EOT, 12, 13])
    assert r.tokens == [10, 11, ASSISTANT_CLOSE, EOT]
    assert (r.stop_reason, r.stopped_on) == ("stop_token", EOT)


def test_assistant_close_stops_only_when_asked():
    assert run_script([10, ASSISTANT_CLOSE, 11, EOT]).tokens == [10, ASSISTANT_CLOSE, 11, EOT]
    r = run_script([10, ASSISTANT_CLOSE, 11, EOT], stop_at_assistant_close=True)
    assert r.tokens == [10, ASSISTANT_CLOSE] and r.stopped_on == ASSISTANT_CLOSE


def test_endoftext_and_custom_stop_ids():
    assert run_script([10, ENDOFTEXT_ID, 11]).stopped_on == ENDOFTEXT_ID
    r = run_script([10, 11, 12, EOT], stop_ids=frozenset({11}))
    assert r.tokens == [10, 11] and r.stopped_on == 11


def test_max_new_tokens_and_context_end():
    r = run_script([10] * 50, max_new_tokens=7)
    assert (len(r.tokens), r.stop_reason) == (7, "max_new_tokens")
    r = run_script([10] * 50, prompt_len=4, block_size=12, max_new_tokens=100)
    assert (len(r.tokens), r.stop_reason) == (8, "context_full")
    with pytest.raises(ValueError, match="block_size"):
        run_script([10], prompt_len=12, block_size=12)


def test_kv_cache_runs_one_forward_per_token():
    model = ScriptedLM([10] * 20, 4)
    generate(model, [1, 2, 3, 4], max_new_tokens=10)
    assert model.calls == 10


# ----------------------------------------------------------------------------- sampling params


def test_process_logits_matches_transformers_warpers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        logits = torch.randn(VOCAB_SIZE, generator=g) * 3
        context = torch.randint(0, 50000, (1, 40), generator=g)
        seen = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        seen[context[0]] = True
        cfg = SamplingConfig(temperature=0.7, top_k=100, top_p=0.8, repetition_penalty=1.2, suppress_unused=False)
        ours = process_logits(logits, cfg, seen)
        ref = logits[None].clone()
        for proc in (RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.7), TopKLogitsWarper(100),
                     TopPLogitsWarper(0.8)):
            ref = proc(context, ref)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref[0])), trial
        finite = ~torch.isinf(ours)
        torch.testing.assert_close(ours[finite], ref[0][finite])


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = lambda cfg: (~torch.isinf(process_logits(logits, cfg))).nonzero().flatten().tolist()  # noqa: E731
    assert kept(SamplingConfig(temperature=1.0, top_k=2, suppress_unused=False)) == [0, 1]
    assert kept(SamplingConfig(temperature=1.0, top_p=0.6, suppress_unused=False)) == [0, 1]
    assert kept(SamplingConfig(temperature=1.0, top_p=0.85, suppress_unused=False)) == [0, 1, 2]
    assert kept(SamplingConfig(temperature=1.0, top_p=0.1, suppress_unused=False)) == [0]
    assert kept(SamplingConfig(temperature=0.0, top_k=1, suppress_unused=False)) == [0, 1, 2, 3]  # greedy: no warpers


def test_unused_rows_are_never_selected_and_low_temperature_is_greedy():
    logits = torch.zeros(VOCAB_SIZE)
    logits[VOCAB_SIZE - 1] = 100.0
    logits[42] = 5.0
    assert select_token(logits, SamplingConfig()) == 42
    assert select_token(logits, SamplingConfig(suppress_unused=False)) == VOCAB_SIZE - 1
    g = torch.Generator().manual_seed(0)
    assert all(select_token(logits, SamplingConfig(temperature=1e-3), generator=g) == 42 for _ in range(20))


def test_sampling_follows_the_distribution():
    logits = torch.full((VOCAB_SIZE,), -1e9)
    logits[[1, 2]] = torch.log(torch.tensor([0.8, 0.2]))
    g = torch.Generator().manual_seed(0)
    draws = [select_token(logits, SamplingConfig(temperature=1.0), generator=g) for _ in range(400)]
    assert set(draws) == {1, 2} and 0.7 < draws.count(1) / 400 < 0.9


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0.0),
                                 dict(top_p=1.5), dict(repetition_penalty=0)])
def test_invalid_sampling_config_is_refused(bad):
    with pytest.raises(ValueError):
        SamplingConfig(**bad)


# ----------------------------------------------------------------------------- text, policies


def test_encode_with_tags_and_incremental_decoding():
    tok = get_tokenizer()
    ids = encode_with_tags("<myPT_system>You are MyPT.</myPT_system><myPT_user>Say hello.</myPT_user><myPT_assistant>")
    record = {"system": "You are MyPT.", "messages": [{"role": "user", "content": "Say hello."}]}
    assert ids == build_prompt(record)
    text = "Grüße aus Köln: süß!</myPT_assistant><myPT_eot>"
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(t) for t in encode_with_tags(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_text_policy_cuts_like_a_model():
    policy = TextPolicy(["Hi!</myPT_assistant><myPT_eot>trailing", "no stop here"])
    r1 = policy([1, 2, 3])
    assert r1.text() == "Hi!</myPT_assistant><myPT_eot>" and r1.stop_reason == "stop_token"
    r2 = policy([1, 2, 3], max_new_tokens=2)
    assert r2.num_tokens == 2 and r2.stop_reason == "max_new_tokens"
    assert isinstance(ModelPolicy(random_model())([1, 2, 3], max_new_tokens=3), GenerationResult)


# ----------------------------------------------------------------------------- CLI


def run_tool(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "generate.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_generate_cli(exported):
    model, _, path = exported
    r = run_tool("--model", path, "--prompt",
                 "<myPT_system>You are MyPT.</myPT_system><myPT_user>Say hello.</myPT_user><myPT_assistant>",
                 "--max_new_tokens", 12)
    assert r.returncode == 0, r.stderr
    expected = generate(model, PROMPTS[0], SamplingConfig(max_new_tokens=12))
    assert r.stdout.rstrip("\n") == expected.text()
    assert "stop:" in r.stderr
    r = run_tool("--model", path, "--system", "You are MyPT.", "--user", "Say hello.", "--max_new_tokens", 12,
                 "--no_stream")
    assert r.returncode == 0 and r.stdout.rstrip("\n") == expected.text()
    r = run_tool("--model", path, "--user", "Hi", "--top_p", 2)
    assert r.returncode == 2 and "top_p" in r.stderr and "Traceback" not in r.stderr
    r = run_tool("--model", path.parent / "missing", "--user", "Hi")
    assert r.returncode == 2 and "does not exist" in r.stderr
