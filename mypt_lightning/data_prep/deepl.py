"""A small DeepL client (HTTP API v2, JSON body) and a resumable file translator.

    client = DeepLClient.from_env()            # DEEPL_API_KEY or DEEPL_AUTH_KEY
    client.translate(["Hello"], target_lang="DE")  -> ["Hallo"]

Free-tier keys (ending in ":fx") go to api-free.deepl.com, others to api.deepl.com;
``api_url`` (or DEEPL_API_URL) points elsewhere, e.g. a local test server. Requests carry
``Authorization: DeepL-Auth-Key KEY`` and ``{"text": [...], "target_lang": ...}``; the
answer is ``{"translations": [{"detected_source_language": ..., "text": ...}]}``. Rate
limits (429) and server errors (5xx) are retried with backoff; a bad key (403) or an
exhausted quota (456) stops with a clear message.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from mypt_lightning.errors import UserError
from mypt_lightning.jsonio import loads_strict

FREE_URL = "https://api-free.deepl.com/v2/translate"
PRO_URL = "https://api.deepl.com/v2/translate"
KEY_VARIABLES = ("DEEPL_API_KEY", "DEEPL_AUTH_KEY")
MAX_TEXTS_PER_REQUEST = 50


class DeepLError(UserError):
    """The DeepL API refused or failed; the message says why."""


class DeepLClient:
    def __init__(self, api_key: str, api_url: str | None = None, *, timeout: float = 60.0, max_retries: int = 5,
                 backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        if not api_key:
            raise DeepLError("empty DeepL API key")
        self.api_key = api_key
        self.api_url = api_url or os.environ.get("DEEPL_API_URL") or (FREE_URL if api_key.endswith(":fx") else PRO_URL)
        self.timeout, self.max_retries, self.backoff, self.sleep = timeout, max_retries, backoff, sleep
        self.characters = 0

    @classmethod
    def from_env(cls, api_url: str | None = None, **kwargs) -> "DeepLClient":
        for name in KEY_VARIABLES:
            if os.environ.get(name):
                return cls(os.environ[name], api_url, **kwargs)
        raise DeepLError(f"no DeepL API key: set {' or '.join(KEY_VARIABLES)} (a free key ends in ':fx')")

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(self.api_url, data=body, method="POST", headers={
            "Authorization": f"DeepL-Auth-Key {self.api_key}", "Content-Type": "application/json",
            "User-Agent": "mypt-lightning/0.1"})
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return loads_strict(response.read(), f"DeepL answer from {self.api_url}")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200]
                if exc.code == 403:
                    raise DeepLError(f"DeepL rejected the API key (HTTP 403) at {self.api_url}") from None
                if exc.code == 456:
                    raise DeepLError("DeepL quota exceeded (HTTP 456); finished translations are kept, "
                                     "re-run later to resume") from None
                if exc.code not in (429, 500, 502, 503, 504) or attempt == self.max_retries:
                    raise DeepLError(f"DeepL HTTP {exc.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.max_retries:
                    raise DeepLError(f"cannot reach DeepL at {self.api_url}: {exc}") from None
            self.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def translate(self, texts: list[str], target_lang: str, source_lang: str | None = None,
                  formality: str | None = None) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), MAX_TEXTS_PER_REQUEST):
            batch = texts[start:start + MAX_TEXTS_PER_REQUEST]
            payload: dict[str, Any] = {"text": batch, "target_lang": target_lang.upper()}
            if source_lang:
                payload["source_lang"] = source_lang.upper()
            if formality:
                payload["formality"] = formality
            answer = self._post(payload)
            translations = answer.get("translations") if isinstance(answer, dict) else None
            if not isinstance(translations, list) or len(translations) != len(batch):
                raise DeepLError(f"unexpected DeepL answer: {str(answer)[:200]}")
            out += [t["text"] for t in translations]
            self.characters += sum(len(t) for t in batch)
        return out


def translate_file(client: DeepLClient, input_path: str | Path, output_path: str | Path, target_lang: str,
                   source_lang: str | None = None, formality: str | None = None, batch_size: int = 50
                   ) -> dict[str, int]:
    """Translate a strings file (``{"key", "text"}`` lines) into ``output_path``, appending
    batch by batch; keys already in the output are skipped, so an interrupted run resumes."""
    from .translation import iter_strings

    out = Path(output_path)
    done: set[str] = set()
    if out.exists():
        data, good = out.read_bytes(), 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a half-written last line from a killed run
            try:  # loads_strict: a hostile line is a ValueError (EpisodeError) like a truncated one
                done.add(loads_strict(line, f"{out}")["key"])
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
        if good != len(data):
            with open(out, "r+b") as handle:
                handle.truncate(good)
    pending = [item for item in iter_strings(input_path) if item["key"] not in done]
    batch_size = max(1, min(batch_size, MAX_TEXTS_PER_REQUEST))
    translated = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as handle:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            texts = client.translate([b["text"] for b in batch], target_lang, source_lang, formality)
            for item, text in zip(batch, texts):
                handle.write(json.dumps({"key": item["key"], "text": text}, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            translated += len(batch)
    return {"already_done": len(done), "translated": translated, "characters": client.characters}

