"""Synthetic episodes with the length profiles of the curriculum phases, for benchmarks and
tests (not training data). Text is made of pseudo-words drawn from a Zipf-like vocabulary of
English- and German-looking syllables, so BPE sees a realistic mix of common and rare words.

    phase1  format lock: "You are MyPT." + a short question + a short answer (~30 tokens)
    phase3  RAG chat: chat system prompt, user context + question, think, answer, cite (~250)
    phase6  agentic: system listing the tools, search -> get_doc -> answer with think/cite (~800)

``episode_lengths(phase, n)`` draws token lengths from the same profiles without building
text (packing benchmarks).
"""

from __future__ import annotations

import random

import numpy as np

_SYLLABLES = ("ka ti ro mu se la ne vo di pa ber gen sch ung lich ter the and ing ion al en er st "
              "ver zu ge ma re co pro tion ment ei au ie ch ck qu").split()
PROFILES = {  # lognormal (median tokens, sigma) and the block size used with them
    "phase1": (28, 0.35), "phase2": (45, 0.4), "phase3": (230, 0.55), "phase4": (480, 0.5),
    "phase5": (380, 0.55), "phase6": (800, 0.5),
}


class _Words:
    def __init__(self, rng: random.Random, size: int = 5000):
        self.rng = rng
        self.words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 4))))
                      for _ in range(size)]
        weights = 1.0 / np.arange(1, size + 1)
        self.cum = np.cumsum(weights / weights.sum()).tolist()

    def sentence(self, n: int) -> str:
        import bisect

        words = [self.words[min(bisect.bisect(self.cum, self.rng.random()), len(self.words) - 1)] for _ in range(n)]
        return " ".join(words).capitalize() + self.rng.choice((".", ".", "?", "!"))

    def text(self, n_words: int) -> str:
        out, left = [], max(1, n_words)
        while left > 0:
            k = min(left, self.rng.randint(6, 18))
            out.append(self.sentence(k))
            left -= k
        return " ".join(out)


def synthetic_episodes(n: int, phase: str = "phase3", seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = _Words(rng)
    out = []
    for i in range(n):
        lang = "de" if rng.random() < 0.4 else "en"
        scale = float(np.exp(rng.gauss(0.0, 0.5)))
        if phase == "phase1":
            out.append({"system": "You are MyPT.", "messages": [
                {"role": "user", "content": words.sentence(rng.randint(2, 6))},
                {"role": "assistant", "content": words.sentence(rng.randint(1, 5))}], "language": lang,
                "_meta": {"operator": rng.choice(("FORMAT", "ECHO")), "id": i}})
        elif phase == "phase6":
            query = words.sentence(4)
            out.append({"system": "You are MyPT, an assistant with a document workspace. Tools: workspace.search, "
                                  "workspace.list_docs, workspace.get_doc, workspace.summarize.",
                        "messages": [
                            {"role": "user", "content": words.text(int(12 * scale))},
                            {"role": "assistant_toolcall", "name": "workspace.search",
                             "arguments": {"query": query, "top_k": 3}, "think": words.text(int(10 * scale))},
                            {"role": "toolresult", "name": "workspace.search", "content": {"documents": [
                                {"doc_id": f"doc-{rng.randint(1, 99)}", "snippet": words.text(int(25 * scale))}
                                for _ in range(3)]}},
                            {"role": "assistant_toolcall", "name": "workspace.get_doc", "arguments": {"doc_id": "doc-7"}},
                            {"role": "toolresult", "name": "workspace.get_doc", "content": words.text(int(100 * scale))},
                            {"role": "assistant", "content": words.text(int(40 * scale)), "think": words.text(int(12 * scale)),
                             "cite": "doc-7"}], "language": lang, "_meta": {"id": i}})
        else:  # phase3-like RAG chat
            out.append({"system": "You are MyPT, a helpful assistant. Answer clearly and in the user's language.",
                        "messages": [
                            {"role": "user", "content": words.text(int(8 * scale)), "context": words.text(int(38 * scale))},
                            {"role": "assistant", "content": words.text(int(26 * scale)),
                             "think": words.text(int(7 * scale)), "cite": f"doc-{rng.randint(1, 99)}"}],
                        "language": lang, "_meta": {"id": i}})
    return out


def episode_lengths(phase: str, n: int, seed: int = 0, max_length: int | None = None) -> np.ndarray:
    """Token lengths drawn from a phase's profile (clipped to [8, max_length])."""
    median, sigma = PROFILES[phase]
    rng = np.random.default_rng(seed)
    lengths = np.round(median * np.exp(rng.normal(0.0, sigma, n))).astype(np.int64)
    return np.clip(lengths, 8, max_length if max_length else None)
