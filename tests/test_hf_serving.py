"""An export is ready to serve: transformers' generate/pipeline stop where ours stops with
the same greedy tokens, the model card says what the run left behind, an HF Llama folder
loads back (bit-identical round trip, logits of a transformers-made model), and the
legacy-bias report's top-1/top-5 agreement matches the exported model's own logits.

References: transformers ``LlamaForCausalLM.generate`` / ``pipeline`` / logits for
generation and import; our ``generation.generate`` for the tokens ours produces.
"""

from __future__ import annotations

import json

import pytest
import torch

from mypt_lightning.weights.checkpoint import CheckpointError, check_loadable, detect_format, load_model, save_exported
from mypt_lightning.inference.generation import SamplingConfig, generate
from mypt_lightning.weights.hf_export import export_hf, logit_shift, probe_sequences
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.tokens.protocol import build_prompt, serialize_episode
from mypt_lightning.tokens.special_tokens import ASSISTANT_CLOSE, ENDOFTEXT_ID, EOT, TOKENIZER_VOCAB_SIZE
from mypt_lightning.tokens.tokenizer import get_tokenizer

transformers = pytest.importorskip("transformers")
torch.set_num_threads(2)

EPISODES = [
    {"system": "You are MyPT.", "messages": [
        {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello! How can I help?"}]},
    {"messages": [{"role": "user", "content": "Wie heißt die Hauptstadt?", "context": "[1] Bern ist die Bundesstadt."},
                  {"role": "assistant", "content": "Bern.", "think": "Dokument 1.", "cite": "[1]"}]},
    {"messages": [{"role": "user", "content": "Search budget"},
                  {"role": "assistant_toolcall", "name": "workspace.search", "arguments": {"query": "budget"}},
                  {"role": "toolresult", "name": "workspace.search", "content": {"documents": []}},
                  {"role": "assistant", "content": "Nothing found."}]},
]
# The same conversations as HF messages (the chat template's input), up to the point where
# the assistant speaks next.
PROMPTS = [
    ([{"role": "system", "content": "You are MyPT."}, {"role": "user", "content": "Say hello."}],
     {"system": "You are MyPT.", "messages": EPISODES[0]["messages"][:1]}),
    ([{"role": "user", "content": "Wie heißt die Hauptstadt?", "context": "[1] Bern ist die Bundesstadt."}],
     {"messages": EPISODES[1]["messages"][:1]}),
    ([{"role": "user", "content": "Search budget"}], {"messages": EPISODES[2]["messages"][:1]}),
    ([{"role": "user", "content": "Search budget"},
      {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "workspace.search",
                                                                            "arguments": {"query": "budget"}}}]},
      {"role": "tool", "content": {"documents": []}}],
     {"messages": EPISODES[2]["messages"][:3]}),
]


def _trained_model() -> MyPT:
    """A tiny model that has memorised EPISODES, so greedy decoding reaches the stop tokens."""
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(n_layer=2, n_embd=64, block_size=128))
    seqs = [serialize_episode(e)[0] for e in EPISODES]
    T = max(map(len, seqs))
    x = torch.tensor([s + [ENDOFTEXT_ID] * (T - len(s)) for s in seqs])
    targets = torch.tensor([s[1:] + [-100] * (T - len(s)) for s in seqs])  # no loss on the padding
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(120):
        loss = torch.nn.functional.cross_entropy(model(x)[:, :-1].flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """which -> (our model read back from its export, the HF export folder); built on first use."""
    root = tmp_path_factory.mktemp("serve")
    cache = {}

    def get(which):
        if which not in cache:
            torch.manual_seed(5)
            model = _trained_model() if which == "trained" else MyPT(MyPTConfig.tiny(block_size=128)).eval()
            save_exported(model, root / which / "ours")
            export_hf(root / which / "ours", root / which / "hf")
            cache[which] = (load_model(root / which / "ours"), root / which / "hf")
        return cache[which]

    return get


def _hf_prompt(tok, messages):
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


# "trained" memorises EPISODES first (about 15 s on a free CPU core, minutes on a loaded one),
# so greedy decoding runs into the stop tokens; "random" checks the tokens on a random init.
@pytest.mark.parametrize("which", ["random", pytest.param("trained", marks=pytest.mark.slow)])
def test_hf_generate_equals_ours(exports, which):
    ours_model, folder = exports(which)
    prompts = PROMPTS if which == "trained" else PROMPTS[::3]
    budget = 40 if which == "trained" else 16
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert set(hf.generation_config.eos_token_id) == {EOT, ASSISTANT_CLOSE, ENDOFTEXT_ID}
    assert hf.generation_config.pad_token_id == ENDOFTEXT_ID and not hf.generation_config.do_sample
    stops = []
    for messages, record in prompts:
        prompt = build_prompt(record)
        assert _hf_prompt(tok, messages) == prompt
        x = torch.tensor([prompt])
        for eos, stop_close in ((None, True), ([EOT, ENDOFTEXT_ID], False)):
            kw = {} if eos is None else {"eos_token_id": eos}
            with torch.no_grad():
                theirs = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=budget, **kw)[0, len(prompt):]
            mine = generate(ours_model, prompt, SamplingConfig(max_new_tokens=budget, stop_at_assistant_close=stop_close))
            assert theirs.tolist() == mine.tokens, (which, messages, eos)
            stops.append(mine.stop_reason)
            assert not any(t >= TOKENIZER_VOCAB_SIZE for t in mine.tokens)
    if which == "trained":  # the memorised answers end where the protocol ends them
        assert stops.count("stop_token") == len(stops)
        mine = generate(ours_model, build_prompt(PROMPTS[0][1]), SamplingConfig(max_new_tokens=40))
        assert mine.tokens[-2:] == [ASSISTANT_CLOSE, EOT]
        assert get_tokenizer().decode(mine.tokens) == "Hello! How can I help?</myPT_assistant><myPT_eot>"


@pytest.mark.slow
def test_pipeline_on_chat_messages(exports):
    ours_model, folder = exports("trained")
    pipe = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    messages, record = PROMPTS[0]
    out = pipe(messages, max_new_tokens=40, return_full_text=False)[0]["generated_text"]
    mine = generate(ours_model, build_prompt(record), SamplingConfig(max_new_tokens=40, stop_at_assistant_close=True))
    assert out == get_tokenizer().decode(mine.tokens, skip_special=True) == "Hello! How can I help?"


# ----------------------------------------------------------------------------- model card


def test_model_card_quotes_the_run(tmp_path):
    run = tmp_path / "runs" / "p3"
    model = MyPT(MyPTConfig.tiny(rope_scale=4.0))
    save_exported(model, run / "export", extra={"phase": "phase3_chat_sft", "global_step": 1234})
    (run / "run_info.json").write_text(json.dumps({"run_name": "p3", "phase": "phase3_chat_sft",
                                                   "init_from": "runs/p2/export", "command": "run.py phase=phase3_chat_sft"}))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "phase:\n  name: phase3_chat_sft\n  dataset_dir: data/sft_phase3_chat_sft\n"
        "data:\n  data_mix:\n  - {name: chat, path: data/sft_phase3_chat_sft, weight: 0.9}\n"
        "  - {name: replay, path: data/sft_pretrain_replay, weight: 0.1}\n")
    report = {"format_version": 1, "phase": 3, "regression": False, "passed": False, "created": "2026-01-02T03:04:05",
              "gates": [{"phase": 3, "name": "chat_sft", "passed": False,
                         "criteria": [{"text": "pass_rate 0.700 >= 0.80: FAILED"}]}],
              "ood": [{"file": "data/eval_ood/phase3_chat_ood.jsonl", "pass_rate": 0.625}], "warnings": []}
    (run / "gate_report.json").write_text(json.dumps(report))
    export_hf(run / "export", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    n_params = sum(p.numel() for p in model.parameters())
    for needle in ("# MyPT (phase3_chat_sft)", f"| parameters | {n_params:,} |", "2 / 64 / 4 (head_dim 16",
                   "linear scaling x4", "step 1234", "started from: runs/p2/export", "data: data/sft_phase3_chat_sft",
                   "chat: weight 0.9", "**phase 3: FAILED**", "pass_rate 0.700 >= 0.80: FAILED",
                   "phase3_chat_ood.jsonl`: pass rate 0.625", "vllm serve EXPORT", "untested",
                   "--max-model-len 256", "split_special_tokens=True", "tools/export_gguf.py"):
        assert needle in card, needle
    # without a run around the checkpoint nothing is invented
    save_exported(model, tmp_path / "lonely")
    export_hf(tmp_path / "lonely", tmp_path / "hf2")
    card = (tmp_path / "hf2" / "README.md").read_text()
    assert "# MyPT (unknown)" in card and "data: unknown" in card and "No gate_report.json" in card
    # an explicit report that is not there is an error, not a silent omission
    from mypt_lightning.errors import UserError

    with pytest.raises(UserError, match="--gate_report"):
        export_hf(tmp_path / "lonely", tmp_path / "hf3", gate_report=tmp_path / "missing.json")


# ----------------------------------------------------------------------------- import


def _folder_bytes(folder, skip=("README.md",)):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


@pytest.mark.parametrize("overrides", [{}, {"bias": True, "tie_weights": False, "rope_scale": 2.0, "mlp_hidden": 96}])
def test_export_import_export_is_bit_identical(tmp_path, overrides):
    torch.manual_seed(1)
    model = MyPT(MyPTConfig.tiny(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # nonzero biases and norms
    save_exported(model, tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf1")
    assert detect_format(tmp_path / "hf1") == "hf-llama" and check_loadable(tmp_path / "hf1") == "hf-llama"
    back = load_model(tmp_path / "hf1")
    assert back.config.to_dict() == {**model.config.to_dict(), "attn_impl": back.config.attn_impl}
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    export_hf(tmp_path / "hf1", tmp_path / "hf2")
    assert _folder_bytes(tmp_path / "hf1") == _folder_bytes(tmp_path / "hf2")
    # init_from= reads it (the training module's loader)
    from mypt_lightning.training.lit_module import MyPTLitModule

    module = MyPTLitModule(model=model.config.to_dict(), init_from=str(tmp_path / "hf1"))
    module.configure_model()
    assert all(torch.equal(module.model.state_dict()[k], v) for k, v in model.state_dict().items())


def test_import_transformers_made_llama(tmp_path):
    """A Llama that transformers itself made and saved (sharded, untied, bf16): our logits equal its."""
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False)
    torch.manual_seed(2)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(8.0)  # sharp attention: RoPE and its theta matter
    hf.save_pretrained(tmp_path / "hf", max_shard_size="200KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    ours = load_model(tmp_path / "hf")
    assert ours.config.rope_theta == 500.0 and ours.config.norm_eps == 1e-5 and ours.config.mlp_hidden == 160
    ids = torch.randint(0, 512, (2, 100))
    with torch.no_grad():
        a, b = ours(ids), hf(ids).logits
    assert ((a - b).norm() / b.norm()).item() < 1e-5


@pytest.mark.parametrize("change, message", [
    ({"num_key_value_heads": 2}, "grouped-query attention"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "RoPE type 'llama3'"),
    ({"mlp_bias": True}, "mlp_bias"),
])
def test_import_refuses_what_does_not_fit(tmp_path, change, message):
    save_exported(MyPT(MyPTConfig.tiny()), tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(change)
    if "rope_parameters" in change:
        cfg["rope_scaling"] = None
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "hf")


# ----------------------------------------------------------------------------- legacy bias


def test_bias_report_agreement_matches_the_export(tmp_path):
    """top-1 / top-5 agreement of the report == what the exported model (no bias) predicts
    compared with ours (with bias), on the same probe positions."""
    torch.manual_seed(3)
    model = MyPT(MyPTConfig.tiny(lm_head_bias=True)).eval()
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.randn(model.config.vocab_size) * 0.15)
    save_exported(model, tmp_path / "biased")
    shift = export_hf(tmp_path / "biased", tmp_path / "hf", drop_lm_head_bias=True)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    top1 = top5 = n = 0
    for ids in probe_sequences(model.config.block_size):
        x = torch.tensor([ids])
        with torch.no_grad():
            a, b = model(x)[0], hf(x).logits[0]
        top1 += (a.argmax(-1) == b.argmax(-1)).sum().item()
        top5 += sum(len(set(p.tolist()) & set(q.tolist())) / 5 for p, q in zip(a.topk(5).indices, b.topk(5).indices))
        n += len(ids)
    assert shift.positions == n > 200
    assert shift.top1_agreement == pytest.approx(top1 / n, abs=1e-9)
    assert shift.top5_overlap == pytest.approx(top5 / n, abs=1e-6)
    assert 0.0 < shift.top1_agreement < 1.0  # this bias changes some predictions, not all
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "--drop_lm_head_bias" in card and f"{shift.top1_agreement:.1%}" in card
    # a negligible bias moves nothing; a huge one moves (nearly) everything
    with torch.no_grad():
        model.lm_head.bias.fill_(0).index_fill_(0, torch.tensor([7]), 1e-7)
    assert logit_shift(model).top1_agreement == 1.0
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.randn(model.config.vocab_size) * 100)
    big = logit_shift(model)
    assert big.top1_agreement < 0.05 and big.top5_overlap < 0.05
