"""Tokenizer and offline BPE provisioning. No network: the pip download path is faked."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from mypt_lightning.tokens import tokenizer_assets as assets
from mypt_lightning.tokens.special_tokens import (
    ASSISTANT_OPEN,
    ENDOFTEXT_ID,
    EOT,
    ID_TO_SPECIAL,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
)
from mypt_lightning.tokens.tokenizer import (
    MyPTTokenizer,
    TokenizerUnavailableError,
    get_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
SETUP_CLI = REPO / "tools" / "setup_tokenizer.py"


@pytest.fixture(scope="module")
def tok() -> MyPTTokenizer:
    return get_tokenizer()  # TokenizerUnavailableError names the setup command if missing


@pytest.fixture(scope="module")
def real_bpe(tok) -> bytes:
    return assets.bpe_cache_path().read_bytes()


def _no_download(into):  # stands in for pip: tests never touch the network
    raise assets.TokenizerSetupError("network disabled in tests")


# ---------------------------------------------------------------- tokenizer


def test_basic_facts(tok):
    assert tok.vocab_size == VOCAB_SIZE == 50304
    assert tok.name == "r50k_base+mypt19"
    assert tok.encode_text("hello world") == [31373, 995]  # GPT-2's well-known ids
    assert tok.decode([31373, 995]) == "hello world"


def test_content_with_tag_strings_never_becomes_special(tok):
    text = "a <myPT_eot> b <|endoftext|> c </myPT_assistant><myPT_toolcall>"
    ids = tok.encode_text(text)
    assert all(i < ENDOFTEXT_ID for i in ids)
    assert tok.decode(ids) == text


def test_encode_batch_matches_single(tok):
    texts = ["one", "Grüße aus Köln", "<myPT_eot>", ""]
    assert tok.encode_batch_text(texts, num_threads=2) == [tok.encode_text(t) for t in texts]


def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError):
        tok.encode_text(None)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok.encode_batch_text(["a", 3])


def test_decode_specials_and_padding_rows(tok):
    ids = tok.encode_text("Hi") + [EOT, ENDOFTEXT_ID, 50280]
    assert tok.decode(ids) == "Hi<myPT_eot><|endoftext|><unused_50280>"
    assert tok.decode(ids, skip_special=True) == "Hi"
    with pytest.raises(ValueError):
        tok.decode([VOCAB_SIZE])


def test_decode_multibyte_split_across_tokens(tok):
    text = "日本語 Grüße"
    ids = tok.encode_text(text)
    assert tok.decode(ids + [EOT] + ids) == f"{text}<myPT_eot>{text}"


def test_decode_accepts_arrays(tok):
    np = pytest.importorskip("numpy")
    ids = np.array(tok.encode_text("abc") + [ASSISTANT_OPEN], dtype=np.uint32)
    assert tok.decode(ids) == "abc<myPT_assistant>"


def test_token_id_roundtrip(tok):
    for tag, i in SPECIAL_TOKENS.items():
        assert tok.token_to_id(tag) == i
        assert tok.id_to_token(i) == tag
        assert tok.is_special(i)
    assert tok.token_to_id("<|endoftext|>") == ENDOFTEXT_ID
    assert tok.is_special(ENDOFTEXT_ID) and not tok.is_special(995) and not tok.is_special(50276)
    assert tok.id_to_token(995) == " world"
    with pytest.raises(KeyError):
        tok.token_to_id("<myPT_nope>")
    assert len(ID_TO_SPECIAL) == 19


def test_state_dict(tok):
    state = tok.state_dict()
    assert state["base_encoding"] == "r50k_base"
    assert state["vocab_size"] == 50304 and state["tokenizer_vocab_size"] == 50276
    assert state["special_tokens"]["<myPT_eot>"] == 50275
    tok.check_state_dict(state)
    bad = dict(state, special_tokens={**state["special_tokens"], "<myPT_eot>": 50300})
    with pytest.raises(ValueError, match="special_tokens"):
        tok.check_state_dict(bad)
    with pytest.raises(ValueError, match="missing field 'vocab_size'"):
        tok.check_state_dict({k: v for k, v in state.items() if k != "vocab_size"})


def test_missing_bpe_raises_one_line_naming_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(TokenizerUnavailableError) as info:
        MyPTTokenizer()
    msg = str(info.value)
    assert "\n" not in msg and "python tools/setup_tokenizer.py" in msg


# ---------------------------------------------------------------- offline setup


def test_cache_key_is_tiktokens():
    import hashlib

    url = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
    assert assets.R50K_CACHE_KEY == hashlib.sha1(url.encode()).hexdigest()


def test_default_cache_dir_and_env(monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    assert assets.cache_dir() == Path("~/.cache/mypt_lightning/tiktoken").expanduser()
    assets.ensure_tiktoken_env()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(assets.cache_dir())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/somewhere/else")
    assert assets.ensure_tiktoken_env() == Path("/somewhere/else")  # the user's choice wins


def test_setup_from_plain_file_then_noop(tmp_path, real_bpe):
    src = tmp_path / "gpt2.tiktoken"
    src.write_bytes(real_bpe)
    cache = tmp_path / "cache"
    r1 = assets.setup_tokenizer(src, directory=cache, downloader=_no_download)
    assert r1.changed and r1.path == cache / assets.R50K_CACHE_KEY
    assert r1.path.read_bytes() == real_bpe
    mtime = r1.path.stat().st_mtime_ns
    r2 = assets.setup_tokenizer(src, directory=cache, downloader=_no_download)
    assert not r2.changed and r2.source == "cached" and r1.path.stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [assets.R50K_CACHE_KEY]  # no temp leftovers


def _sdist(path: Path, data: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in [("openai_whisper-1/whisper/assets/multilingual.tiktoken", b"x"),
                           ("openai_whisper-1/whisper/assets/gpt2.tiktoken", data)]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_setup_from_sdist_and_wheel(tmp_path, real_bpe):
    sdist = _sdist(tmp_path / "openai_whisper-1.tar.gz", real_bpe)
    r = assets.setup_tokenizer(sdist, directory=tmp_path / "c1", allow_download=False)
    assert r.path.read_bytes() == real_bpe
    wheel = tmp_path / "openai_whisper-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("whisper/assets/gpt2.tiktoken", real_bpe)
    r = assets.setup_tokenizer(wheel, directory=tmp_path / "c2", allow_download=False)
    assert r.path.read_bytes() == real_bpe


def test_setup_download_path_uses_downloader(tmp_path, real_bpe):
    def fake_download(into: Path) -> Path:
        return _sdist(into / "openai_whisper-20250625.tar.gz", real_bpe)

    r = assets.setup_tokenizer(directory=tmp_path / "c", downloader=fake_download)
    assert r.changed and "pip download" in r.source and assets.is_installed(tmp_path / "c")


def test_setup_rejects_wrong_bytes_and_replaces_corrupt_cache(tmp_path, real_bpe):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(real_bpe[:-10])
    cache = tmp_path / "cache"
    with pytest.raises(assets.TokenizerSetupError, match="sha256"):
        assets.setup_tokenizer(bad, directory=cache, downloader=_no_download)
    assert not (cache / assets.R50K_CACHE_KEY).exists()
    # a corrupt cached file is not "installed" and gets replaced
    cache.mkdir()
    (cache / assets.R50K_CACHE_KEY).write_bytes(b"garbage")
    good = tmp_path / "good.tiktoken"
    good.write_bytes(real_bpe)
    r = assets.setup_tokenizer(good, directory=cache, allow_download=False)
    assert r.changed and assets.is_installed(cache)


def test_tiktoken_loads_offline_from_provisioned_cache(tmp_path, real_bpe):
    src = tmp_path / "r50k_base.tiktoken"
    src.write_bytes(real_bpe)
    cache = tmp_path / "cache"
    code = (
        "import os, tiktoken\n"
        "from mypt_lightning.tokens.tokenizer import MyPTTokenizer\n"
        "t = MyPTTokenizer()\n"
        "assert os.environ['TIKTOKEN_CACHE_DIR'] == %r\n"
        "print(t.encode_text('hello world'))\n" % str(cache)
    )
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(cache), HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", PYTHONPATH=str(REPO))
    assert subprocess.run([sys.executable, str(SETUP_CLI), "--from", str(src), "--no-download"],
                          env=env, capture_output=True, text=True).returncode == 0
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[31373, 995]"


def test_cli_twice_is_noop_and_failure_is_one_line_exit_2(tmp_path, real_bpe):
    src = tmp_path / "gpt2.tiktoken"
    src.write_bytes(real_bpe)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "cache"))
    run = lambda *a: subprocess.run([sys.executable, str(SETUP_CLI), *a], env=env,  # noqa: E731
                                    capture_output=True, text=True)
    first, second = run("--from", str(src)), run("--from", str(src))
    assert first.returncode == 0 and "installed" in first.stdout
    assert second.returncode == 0 and "already present" in second.stdout

    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty")
    fail = run("--no-download", "--from", str(tmp_path / "missing.tiktoken"))
    assert fail.returncode == 2
    lines = fail.stderr.strip().splitlines()
    assert len(lines) == 1 and "--from PATH" in lines[0] and "missing.tiktoken" in lines[0]
