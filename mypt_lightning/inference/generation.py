"""Text generation with MyPT: greedy or sampled decoding, KV cache, stop tokens, streaming.

One decode step (what :class:`TokenStream` does per new token)::

    logits of the last position
      -> unused rows 50276..50303 masked      (embedding padding, never a real token)
      -> repetition penalty                   (every id already in prompt + output:
                                               l / p if l > 0 else l * p, as transformers)
      -> greedy: argmax                       (temperature 0)
         sampling: / temperature -> top-k -> top-p -> softmax -> multinomial
      -> stop?  <myPT_eot>, <|endoftext|>, and </myPT_assistant> when asked

The processing order and formulas are transformers' (repetition penalty before the
warpers; temperature, top-k, top-p), so the same weights give the same greedy tokens as
``LlamaForCausalLM.generate`` on the exported model (tests/test_generation.py).

With the KV cache (default) the prompt is run once and every later step feeds one token;
without it every step re-runs the whole sequence (the reference the cache is tested and
benchmarked against). Generation never runs past the model's ``block_size``: the stop
reason then says ``context_full``.

Prompts are token ids, built by :func:`mypt_lightning.tokens.protocol.build_prompt` (the same
serializer as the training data) or, for a raw string with tag text typed by a user, by
:func:`encode_with_tags`. A *policy* is anything called as
``policy(prompt_ids, max_new_tokens=..., stop_ids=..., on_token=...) -> GenerationResult``:
:class:`ModelPolicy` wraps a model, :class:`TextPolicy` answers with given text (tests,
dry runs). The agent loop and the gates only talk to policies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence

import torch

from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_CLOSE,
    ENDOFTEXT_ID,
    EOT,
    SPECIAL_TOKENS,
    TOKENIZER_VOCAB_SIZE,
)

STOP_REASONS = ("stop_token", "max_new_tokens", "context_full")
DEFAULT_STOP_IDS = frozenset({EOT, ENDOFTEXT_ID})


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens and when to stop.

    temperature 0 means greedy (top_k/top_p are then ignored, as in transformers'
    ``do_sample=False``). ``stop_ids`` None means <myPT_eot> and <|endoftext|>, plus
    </myPT_assistant> when ``stop_at_assistant_close``. ``seed`` makes sampling
    reproducible (a private generator; the global RNG is not touched).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop_at_assistant_close: bool = False
    stop_ids: frozenset[int] | None = None
    seed: int | None = None
    use_kv_cache: bool = True
    suppress_unused: bool = True  # never emit the embedding padding rows 50276..50303

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.stop_ids is not None:
            object.__setattr__(self, "stop_ids", frozenset(int(t) for t in self.stop_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def resolved_stop_ids(self) -> frozenset[int]:
        if self.stop_ids is not None:
            return self.stop_ids
        return DEFAULT_STOP_IDS | ({ASSISTANT_CLOSE} if self.stop_at_assistant_close else frozenset())

    def with_(self, **changes) -> SamplingConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class GenerationResult:
    """New tokens (the stop token included when one was hit) and why generation ended."""

    tokens: list[int]
    stop_reason: str
    prompt_length: int
    stopped_on: int | None = None  # the stop id that ended generation

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def text(self, tokenizer=None) -> str:
        return _tokenizer(tokenizer).decode(self.tokens)


def _tokenizer(tokenizer):
    if tokenizer is not None:
        return tokenizer
    from mypt_lightning.tokens.tokenizer import get_tokenizer

    return get_tokenizer()


# ============================================================================ logits -> token


def process_logits(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the unused-row mask, repetition penalty and (when sampling) temperature,
    top-k and top-p to one row of logits (vocab,) or to a batch of rows (B, vocab), each
    row on its own. ``seen``: bool, the same shape, ids in context.
    Returns a new float32 tensor; removed entries are -inf."""
    logits = logits.float().clone()
    if config.suppress_unused and logits.shape[-1] > TOKENIZER_VOCAB_SIZE:
        logits[..., TOKENIZER_VOCAB_SIZE:] = float("-inf")
    if config.repetition_penalty != 1.0 and seen is not None:
        vals = logits[seen]
        logits[seen] = torch.where(vals < 0, vals * config.repetition_penalty, vals / config.repetition_penalty)
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = logits / config.temperature
    if config.top_k > 0:
        k = min(config.top_k, logits.shape[-1])
        kth = torch.topk(logits, k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - config.top_p)
        remove[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def select_token(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> int:
    """The next token id for one row of logits (vocab,)."""
    processed = process_logits(logits, config, seen)
    if config.greedy:
        return int(processed.argmax())
    probs = processed.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# ============================================================================ decoding


class TokenStream:
    """Iterate over newly generated token ids; ``stop_reason`` is set by the time the last
    token is yielded (so a consumer that stops at a stop token still sees it).

    >>> stream = TokenStream(model, prompt_ids, SamplingConfig(max_new_tokens=20))  # doctest: +SKIP
    >>> for token in stream: ...                                                    # doctest: +SKIP
    """

    def __init__(self, model, prompt_ids: Sequence[int], config: SamplingConfig | None = None):
        self.model = model
        self.prompt = [int(t) for t in (prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else prompt_ids)]
        self.config = config or SamplingConfig()
        if not self.prompt:
            raise ValueError("the prompt is empty; build one with protocol.build_prompt")
        block = model.config.block_size
        if len(self.prompt) >= block:
            raise ValueError(f"the prompt has {len(self.prompt)} tokens but the model's context (block_size) "
                             f"is {block}: no room to generate")
        self.tokens: list[int] = []
        self.stop_reason: str | None = None
        self.stopped_on: int | None = None
        self._budget = min(self.config.max_new_tokens, block - len(self.prompt))
        self._iter = self._run()

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return next(self._iter)

    def result(self) -> GenerationResult:
        """Run to the end (if not done) and return the result."""
        for _ in self:
            pass
        return GenerationResult(self.tokens, self.stop_reason, len(self.prompt), self.stopped_on)

    def _run(self) -> Iterator[int]:
        model, cfg = self.model, self.config
        device = model.embed.weight.device
        stops = cfg.resolved_stop_ids()
        generator = None
        if not cfg.greedy and cfg.seed is not None:
            generator = torch.Generator(device=device).manual_seed(cfg.seed)
        seen = None
        if cfg.repetition_penalty != 1.0:
            seen = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
            seen[torch.tensor(self.prompt, device=device)] = True
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():  # the cache is updated in place under inference mode below
                cache = model.new_kv_cache(1, len(self.prompt) + self._budget) if cfg.use_kv_cache else None
            ids = torch.tensor([self.prompt], dtype=torch.long, device=device)
            step_input = ids
            for i in range(self._budget):
                # inference mode only around the work: a `with` held across `yield` would leak
                # into the consumer's code while the stream is suspended.
                with torch.inference_mode():
                    inputs = step_input if cache is not None else ids
                    # Only the last position's logits are needed: the head (the largest
                    # matmul of a small model) skips the rest of the prompt.
                    last = torch.zeros(inputs.shape, dtype=torch.bool, device=device)
                    last[:, -1] = True
                    logits = model(inputs, kv_cache=cache, predict_mask=last)
                    token = select_token(logits[-1], cfg, seen, generator)
                self.tokens.append(token)
                if token in stops:
                    self.stop_reason, self.stopped_on = "stop_token", token
                elif i == self._budget - 1:
                    self.stop_reason = "max_new_tokens" if self._budget == cfg.max_new_tokens else "context_full"
                if seen is not None:
                    seen[token] = True
                step_input = torch.tensor([[token]], dtype=torch.long, device=device)
                if cache is None:
                    ids = torch.cat([ids, step_input], dim=1)
                yield token
                if self.stop_reason is not None:
                    return
        finally:
            if was_training:
                model.train()


def generate(model, prompt_ids: Sequence[int], config: SamplingConfig | None = None, *,
             on_token: Callable[[int], None] | None = None, **overrides) -> GenerationResult:
    """Generate after ``prompt_ids``; ``on_token(id)`` is called for every new token as it
    is produced (streaming). ``overrides`` change SamplingConfig fields for this call.

    >>> result = generate(model, build_prompt(record), max_new_tokens=64)  # doctest: +SKIP
    >>> result.stop_reason, tokenizer.decode(result.tokens)                 # doctest: +SKIP
    """
    config = (config or SamplingConfig()).with_(**overrides)
    stream = TokenStream(model, prompt_ids, config)
    for token in stream:
        if on_token is not None:
            on_token(token)
    return stream.result()


# ============================================================================ policies


class ModelPolicy:
    """A model as a policy: ``policy(prompt_ids, max_new_tokens=, stop_ids=, on_token=)``."""

    def __init__(self, model, sampling: SamplingConfig | None = None):
        self.model = model
        self.sampling = sampling or SamplingConfig()

    def __call__(self, prompt_ids: Sequence[int], *, max_new_tokens: int | None = None,
                 stop_ids: Iterable[int] | None = None,
                 on_token: Callable[[int], None] | None = None) -> GenerationResult:
        config = self.sampling.with_(max_new_tokens=max_new_tokens,
                                     stop_ids=frozenset(stop_ids) if stop_ids is not None else None)
        return generate(self.model, prompt_ids, config, on_token=on_token)

    def generate_batch(self, requests, batch_size: int | None = None) -> list[GenerationResult]:
        """Many calls at once (``batch_generation.GenerationRequest`` s, each with its own
        budget and stop ids): decoded together, greedy results equal to calling one by one."""
        from mypt_lightning.inference.batch_generation import generate_batch

        return generate_batch(self.model, requests, self.sampling, batch_size=batch_size)


class TextPolicy:
    """A policy that "generates" given text: ``reply`` is a string, a list of strings
    (one per call, in order) or a function ``prompt_text -> str``. Tag strings in the reply
    become tag ids; the output is cut at the first stop id and at ``max_new_tokens``
    exactly as a model's would be. For tests of the agent loop and the gates, and dry runs.
    """

    def __init__(self, reply: str | Sequence[str] | Callable[[str], str], *, context_size: int = 4096,
                 max_new_tokens: int = 256, tokenizer=None):
        self.reply = reply
        self.context_size = context_size
        self.max_new_tokens = max_new_tokens
        self.tokenizer = tokenizer
        self.calls: list[str] = []  # prompt texts seen, in order

    def _text_for(self, prompt_text: str) -> str:
        if callable(self.reply):
            return self.reply(prompt_text)
        if isinstance(self.reply, str):
            return self.reply
        i = len(self.calls) - 1
        if i >= len(self.reply):
            raise IndexError(f"TextPolicy: call {i + 1} but only {len(self.reply)} scripted replies")
        return self.reply[i]

    def __call__(self, prompt_ids: Sequence[int], *, max_new_tokens: int | None = None,
                 stop_ids: Iterable[int] | None = None,
                 on_token: Callable[[int], None] | None = None) -> GenerationResult:
        tok = _tokenizer(self.tokenizer)
        prompt = [int(t) for t in prompt_ids]
        self.calls.append(tok.decode(prompt))
        ids = encode_with_tags(self._text_for(self.calls[-1]), tok)
        stops = frozenset(stop_ids) if stop_ids is not None else DEFAULT_STOP_IDS
        limit = max_new_tokens or self.max_new_tokens
        budget = min(limit, self.context_size - len(prompt))
        out: list[int] = []
        reason, stopped_on = None, None
        for t in ids[:budget]:
            out.append(t)
            if on_token is not None:
                on_token(t)
            if t in stops:
                reason, stopped_on = "stop_token", t
                break
        if reason is None:
            # A scripted reply that ends early counts as running into the budget: a real
            # model would have kept going.
            reason = "max_new_tokens" if budget == limit else "context_full"
        return GenerationResult(out, reason, len(prompt), stopped_on)


# ============================================================================ loading, CLI helpers


def load_inference_model(path, device: str = "auto", dtype: str = "float32"):
    """``checkpoint.load_model(path)`` in eval mode on ``device`` ("auto": cuda when available)
    in ``dtype``; a bad device is a UserError."""
    from mypt_lightning.weights.checkpoint import load_model
    from mypt_lightning.errors import UserError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"device {device!r}: {exc}") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: CUDA is not available on this machine")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype {dtype!r}: expected float32, bfloat16 or float16")
    return load_model(path).to(device=torch_device, dtype=getattr(torch, dtype)).eval()


def add_sampling_arguments(parser, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                           repetition_penalty: float = 1.0, max_new_tokens: int = 256) -> None:
    """The sampling and loading options shared by tools/generate.py and tools/chat.py."""
    g = parser.add_argument_group("sampling")
    g.add_argument("--max_new_tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    g.add_argument("--temperature", type=float, default=temperature, help=f"0 = greedy (default {temperature})")
    g.add_argument("--top_k", type=int, default=top_k, help=f"0 = off (default {top_k})")
    g.add_argument("--top_p", type=float, default=top_p, help=f"1.0 = off (default {top_p})")
    g.add_argument("--repetition_penalty", type=float, default=repetition_penalty,
                   help=f"1.0 = off (default {repetition_penalty})")
    g.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible output)")
    g.add_argument("--no_kv_cache", action="store_true", help="recompute the whole sequence every step (slow)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))


def sampling_from_args(args, **extra) -> SamplingConfig:
    """SamplingConfig from the options of :func:`add_sampling_arguments` (ValueError if invalid)."""
    return SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                          use_kv_cache=not args.no_kv_cache, **extra)


# ============================================================================ text helpers

_TAG_STRINGS = {**SPECIAL_TOKENS, "<|endoftext|>": ENDOFTEXT_ID}
_TAG_RE = re.compile("|".join(re.escape(t) for t in sorted(_TAG_STRINGS, key=len, reverse=True)))


def encode_with_tags(text: str, tokenizer=None) -> list[int]:
    """Ids of a raw string in which tag strings ("<myPT_user>", "<myPT_eot>", ...) ARE tags.

    For prompts a person types (``tools/generate.py --prompt``) and scripted replies.
    Never use it on message content: content is plain text (protocol.build_prompt).

    >>> encode_with_tags("<myPT_user>Hi</myPT_user>")[0]  # doctest: +SKIP
    50259
    """
    tok = _tokenizer(tokenizer)
    ids: list[int] = []
    pos = 0
    for m in _TAG_RE.finditer(text):
        if m.start() > pos:
            ids += tok.encode_text(text[pos:m.start()])
        ids.append(_TAG_STRINGS[m.group()])
        pos = m.end()
    if pos < len(text):
        ids += tok.encode_text(text[pos:])
    return ids


class IncrementalDecoder:
    """Turns a stream of ids into text pieces as they arrive: ``push(id) -> new text``.

    BPE pieces that end inside a multi-byte UTF-8 character are held back until the
    character is complete (so streamed German umlauts never print as U+FFFD halves).
    """

    def __init__(self, tokenizer=None, skip_special: bool = False):
        self.tok = _tokenizer(tokenizer)
        self.skip_special = skip_special
        self._pending: list[int] = []

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        if self.tok.is_special(token_id) or token_id >= TOKENIZER_VOCAB_SIZE:
            text = self.flush()
            return text + ("" if self.skip_special else self.tok.id_to_token(token_id))
        self._pending.append(token_id)
        text = self.tok.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < 8:
            return ""
        self._pending = []
        return text

    def flush(self) -> str:
        text = self.tok.decode(self._pending) if self._pending else ""
        self._pending = []
        return text


def load_policy(model_path: str, device: str = "auto", dtype: str = "float32") -> ModelPolicy:
    """The model at ``model_path`` as a greedy :class:`ModelPolicy` (what the gates judge)."""
    return ModelPolicy(load_inference_model(model_path, device, dtype), SamplingConfig(temperature=0.0))


__all__ = [
    "DEFAULT_STOP_IDS", "GenerationResult", "IncrementalDecoder", "ModelPolicy", "STOP_REASONS",
    "SamplingConfig", "TextPolicy", "TokenStream", "add_sampling_arguments", "encode_with_tags", "generate",
    "load_inference_model", "load_policy", "process_logits", "sampling_from_args", "select_token",
]
