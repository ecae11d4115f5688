"""Run many gate cases together so that the model decodes their turns in batches.

A case's code stays exactly as it is: ``Gate.run_case`` builds a prompt, calls the
policy, and for the agent gates feeds tool results back and calls it again, as often as
the case needs. Here every case runs in a worker thread that the scheduler drives like
a coroutine: one thread runs at a time, until it calls the policy (it then waits) or
finishes. When every live case waits for the model, their requests go to the policy as
ONE batch (``policy.generate_batch``) and each case gets its own answer::

    cases 1..N start    -> each runs to its first model call and waits
    batch: all waiting  -> policy.generate_batch([req1, ..., reqN])
    each case resumes   -> judges / runs its tool / calls the model again / finishes
    a finished case's slot goes to the next case; repeat until none is left

So gates 1-3 decode their cases in batches, and the multi-turn and agent gates (4-6,
and the OOD sets) advance all their conversations together, batching each model turn
over the cases that are waiting for it. Only one thread runs at any time, so the order
of tool calls and workspace reads inside a case is what it is alone, and with greedy
decoding (``generate_batch`` equals decoding alone) the results are identical to
``batch_size=1``. A policy without ``generate_batch`` (``TextPolicy``) answers the
batch's requests one by one.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence, TypeVar

from mypt_lightning.inference.batch_generation import GenerationRequest, default_batch_size

T = TypeVar("T")
R = TypeVar("R")


def resolve_batch_size(policy, batch_size: int | None) -> int:
    """``batch_size`` if given (>= 1), else the device's default for a model policy and 1
    for any other (a scripted policy gains nothing from batching)."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return batch_size
    model = getattr(policy, "model", None)
    if model is None or not hasattr(policy, "generate_batch"):
        return 1
    return default_batch_size(model.embed.weight.device)


class _Abort(BaseException):
    """Unwinds a case's thread when the run is abandoned (another case raised)."""


class _Worker:
    """One case in its thread; ``step()`` (scheduler side) runs it until its next model call or its end."""

    def __init__(self, index: int, body: Callable[[_Worker], object]):
        self.index = index
        self._body = body
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, name=f"gate-case-{index}", daemon=True)
        self._started = False
        self.request: GenerationRequest | None = None
        self.reply = None
        self.result = None
        self.error: BaseException | None = None
        self.done = False
        self.abort = False

    def _main(self) -> None:
        self._go.acquire()
        try:
            if self.abort:
                raise _Abort
            self.result = self._body(self)
        except _Abort:
            pass
        except BaseException as exc:  # handed to the scheduler, which re-raises it
            self.error = exc
        finally:
            self.done = True
            self._back.release()

    def call(self, request: GenerationRequest):
        """Worker side: wait for the scheduler to answer ``request``."""
        self.request = request
        self._back.release()
        self._go.acquire()
        if self.abort:
            raise _Abort
        reply, self.reply, self.request = self.reply, None, None
        return reply

    def step(self) -> None:
        """Scheduler side: let the case run until it waits for the model again or ends."""
        if not self._started:
            self._started = True
            self._thread.start()
        self._go.release()
        self._back.acquire()

    def cancel(self) -> None:
        """Unwind a case that is waiting for the model (its thread ends)."""
        if self._started and not self.done:
            self.abort = True
            self.step()


class CasePolicy:
    """What a case sees as its policy while batched: a call hands the request to the
    scheduler and returns its answer. Other attributes (``model``, ``sampling``,
    ``context_size``) are the real policy's, so the agent loop sizes its context the same."""

    def __init__(self, worker: _Worker, policy):
        self._worker = worker
        self._policy = policy

    def __call__(self, prompt_ids, *, max_new_tokens=None, stop_ids=None, on_token=None):
        return self._worker.call(GenerationRequest([int(t) for t in prompt_ids], max_new_tokens,
                                                   frozenset(stop_ids) if stop_ids is not None else None, on_token))

    def __getattr__(self, name):
        return getattr(self._policy, name)


def answer_batch(policy, requests: list[GenerationRequest]) -> list:
    """The policy's results for ``requests``: one batched call when it can, else one by one."""
    if hasattr(policy, "generate_batch"):
        return policy.generate_batch(requests, batch_size=len(requests))
    return [policy(r.prompt_ids, max_new_tokens=r.max_new_tokens, stop_ids=r.stop_ids, on_token=r.on_token)
            for r in requests]


def run_batched(body: Callable[[T, object], R], items: Sequence[T], policy, batch_size: int,
                on_result: Callable[[R], None] | None = None) -> list[R]:
    """``[body(item, case_policy) for item in items]`` with at most ``batch_size`` items in
    flight and their model calls batched. ``on_result`` sees the results in item order as
    soon as they (and all before them) are done. An exception in one item stops the run
    and is raised here (the other items' threads are unwound)."""
    results: list = [None] * len(items)
    finished = [False] * len(items)
    reported = 0
    waiting: list[_Worker] = []
    live: list[_Worker] = []
    next_item = 0

    def settle(worker: _Worker) -> None:
        nonlocal reported
        if not worker.done:
            waiting.append(worker)
            return
        live.remove(worker)
        if worker.error is not None:
            raise worker.error
        results[worker.index], finished[worker.index] = worker.result, True
        while reported < len(items) and finished[reported]:
            if on_result is not None:
                on_result(results[reported])
            reported += 1

    try:
        while True:
            while len(waiting) < batch_size and next_item < len(items):
                item = items[next_item]
                worker = _Worker(next_item, lambda w, item=item: body(item, CasePolicy(w, policy)))
                next_item += 1
                live.append(worker)
                worker.step()
                settle(worker)
            if not waiting:
                break
            batch, waiting[:] = list(waiting), []
            replies = answer_batch(policy, [w.request for w in batch])
            for worker, reply in zip(batch, replies):
                worker.reply = reply
                worker.step()
                settle(worker)
    except BaseException:
        for worker in list(live):
            worker.cancel()
        raise
    return results


__all__ = ["CasePolicy", "answer_batch", "resolve_batch_size", "run_batched"]
