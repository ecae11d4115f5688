"""Gates with batched decoding (gates/batching.py): reports identical to batch_size 1, model
turns really batched (agent loops advanced together), errors surface, CLI and callback option."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from mypt_lightning.weights.checkpoint import save_exported
from mypt_lightning.gates import GATES, cli, evaluate
from mypt_lightning.gates.batching import resolve_batch_size, run_batched
from mypt_lightning.inference.generation import ModelPolicy, SamplingConfig, TextPolicy
from mypt_lightning.model import MyPT, MyPTConfig
from mypt_lightning.tokens.special_tokens import EOT, TOOLCALL_CLOSE, TOOLCALL_OPEN
from mypt_lightning.workspace.store import Workspace
from test_gates import CLOSE, by_user, p1_policy, p3_reply, p4_reply, p5_policy, p6_policy  # tests/ on sys.path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workspace():
    return Workspace()


class Recording:
    """A scripted policy that also answers batches, recording each batch's size."""

    def __init__(self, policy: TextPolicy):
        self.policy = policy
        self.context_size = policy.context_size
        self.batches: list[int] = []

    def __call__(self, *args, **kwargs):
        self.batches.append(1)
        return self.policy(*args, **kwargs)

    def generate_batch(self, requests, batch_size=None):
        self.batches.append(len(requests))
        return [self.policy(r.prompt_ids, max_new_tokens=r.max_new_tokens, stop_ids=r.stop_ids) for r in requests]


def report(result) -> dict:
    d = result.to_dict()
    d.pop("seconds")
    return d


SCRIPTED = {
    1: lambda ws: p1_policy("Yes." + CLOSE, "Ja." + CLOSE),
    2: lambda ws: TextPolicy("Sure." + CLOSE),
    3: lambda ws: p3_reply(by_user(GATES[3], ws)),
    4: lambda ws: p4_reply(),
    5: lambda ws: p5_policy(by_user(GATES[5], ws)),
    6: lambda ws: p6_policy(by_user(GATES[6], ws)),
}


@pytest.mark.parametrize("phase", sorted(SCRIPTED))
def test_scripted_gate_reports_are_identical_batched(phase, workspace):
    """Every gate, driven by a scripted policy: the same report with 4 cases in flight as one
    by one; the multi-turn and agent gates (4-6) send every later model turn in batches too."""
    alone = GATES[phase].run(SCRIPTED[phase](workspace), workspace=workspace, batch_size=1)
    policy = Recording(SCRIPTED[phase](workspace))
    seen = []
    batched = GATES[phase].run(policy, workspace=workspace, batch_size=4, progress=seen.append)
    assert report(batched) == report(alone)
    assert [c.id for c in seen] == [c.id for c in alone.cases]  # progress in case order
    calls = {4: 3, 5: 1, 6: 3}.get(phase, 1)  # model calls per case at least (phase 5: tool cases make 2)
    assert sum(policy.batches) >= calls * len(alone.cases)
    assert max(policy.batches) == 4 and len(policy.batches) < sum(policy.batches) / 2


def agent_model(block_size: int = 1024) -> MyPT:
    """A random model whose head leans towards <myPT_toolcall> ... </myPT_toolcall> and
    <myPT_eot>: its turns end after 1, 2 or 3 model calls (invalid calls get error results)."""
    torch.manual_seed(0)
    model = MyPT(MyPTConfig.tiny(n_embd=64, n_head=4, n_layer=2, block_size=block_size, lm_head_bias=True,
                                 tie_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name and "bias" not in name:
                p.normal_(0.0, 0.3)
        model.lm_head.bias.zero_()
        model.lm_head.bias[[TOOLCALL_OPEN, TOOLCALL_CLOSE, EOT]] = torch.tensor([6.0, 6.0, 4.8])
    return model.eval()


def test_model_gate_reports_identical_batched(workspace):
    """A real (random) model: phase 1 and phase 5 (agent loops of different lengths advanced
    together) give the same report with batch_size 5 as with 1."""
    policy = ModelPolicy(agent_model(), SamplingConfig(temperature=0.0))
    for phase, cases in ((1, 10), (5, 8)):
        alone = GATES[phase].run(policy, workspace=workspace, max_cases=cases, batch_size=1)
        batched = GATES[phase].run(policy, workspace=workspace, max_cases=cases, batch_size=5)
        assert report(batched) == report(alone), phase
    steps = [len(c.details["generations"]) for c in alone.cases]
    assert min(steps) == 1 and max(steps) >= 2, steps  # the loops really had different lengths


def test_an_error_in_one_case_is_raised_and_the_other_cases_unwound():
    before = threading.active_count()

    def body(item, policy):
        policy([1, 2, 3])
        if item == 2:
            raise KeyError("case 2 broke")
        return policy([4]).tokens

    with pytest.raises(KeyError, match="case 2 broke"):
        run_batched(body, list(range(6)), TextPolicy("ok"), 3)
    assert threading.active_count() == before
    assert run_batched(lambda item, p: item * 10, [1, 2, 3], TextPolicy("x"), 2) == [10, 20, 30]


def test_resolve_batch_size():
    model = agent_model(block_size=64)
    assert resolve_batch_size(ModelPolicy(model), None) == 16  # CPU default
    assert resolve_batch_size(TextPolicy("x"), None) == 1
    assert resolve_batch_size(TextPolicy("x"), 3) == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            resolve_batch_size(TextPolicy("x"), bad)


def test_cli_batch_size(tmp_path, capsys):
    torch.manual_seed(0)
    save_exported(MyPT(MyPTConfig.tiny(block_size=256)), tmp_path / "model")
    reports = []
    for size in ("1", "3"):
        out = tmp_path / f"r{size}.json"
        code = cli.main(["--model", str(tmp_path / "model"), "--phase", "1", "--max_cases", "6", "--device", "cpu",
                         "--batch_size", size, "--report", str(out)])
        assert code == 1
        data = json.loads(out.read_text())
        for key in ("created", "seconds"):
            data.pop(key)
        for gate in data["gates"]:
            gate.pop("seconds")
        reports.append(data)
    assert reports[0] == reports[1]
    capsys.readouterr()
    assert cli.main(["--model", str(tmp_path / "model"), "--phase", "1", "--batch_size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch_size" in err


def test_evaluate_regression_with_ood_batched(workspace, tmp_path):
    """evaluate() passes batch_size to every gate and to the OOD sets."""
    from test_gates import write_ood

    write_ood(tmp_path)
    runs = []
    for size in (1, 3):
        policy = TextPolicy(lambda p: ("Die Antwort." if "Hallo" in p else "The answer.") + CLOSE)
        r = evaluate(policy, 3, regression=True, workspace=workspace, ood_dir=tmp_path, max_cases=6,
                     batch_size=size).to_dict()
        for key in ("created", "seconds"):
            r.pop(key)
        for gate in r["gates"]:
            gate.pop("seconds")
        runs.append(r)
    assert runs[0] == runs[1] and runs[0]["ood"]


def test_gate_callback_batch_size_option():
    from mypt_lightning.training.callbacks import GateCallback

    assert GateCallback(phase=1, batch_size=4).batch_size == 4
    assert GateCallback(phase=1).batch_size is None
    with pytest.raises(ValueError, match="batch_size"):
        GateCallback(phase=1, batch_size=0)
