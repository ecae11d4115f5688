"""The exported HF tokenizer and chat template against our own tokenizer and serializer.

References: ``MyPTTokenizer.encode_text`` (tiktoken r50k_base, the tokenizer every MyPT
dataset was made with) for plain text, and ``serialize_episode`` / ``build_prompt`` (the
training-data serializer) for conversations, each record written out by hand next to the
HF messages it corresponds to. The tokenizer is loaded the way users load it:
``AutoTokenizer.from_pretrained(folder)``.
"""

from __future__ import annotations

import json
import random

import pytest

from mypt_lightning.weights.hf_tokenizer import write_tokenizer_files
from mypt_lightning.tokens.protocol import build_prompt, serialize_episode
from mypt_lightning.tokens.special_tokens import ENDOFTEXT_ID, SPECIAL_TOKENS
from mypt_lightning.tokens.tokenizer import get_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_tok")
    write_tokenizer_files(folder, model_max_length=1024)
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def ours():
    return get_tokenizer()


SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog. It's 5 o'clock, isn't it? We'll see; they've gone.",
    "de": "Größenwahn und Übermut: Die Straße in München heißt „Maßstab“. Äpfel, Öl, Übel – 3,50 €.",
    "emoji": "Party 🎉🎉 time 👩‍👩‍👧‍👦 and 👍🏽! ✨✨✨ 🇩🇪",
    "code": "def f(x: int) -> int:\n    return x ** 2  # square\n\nclass A:\n\tpass\n{\"k\": [1, 2.5e-3]}\n",
    "whitespace": "   leading\t\ttabs  \n\n\n   trailing   \r\n \u00a0 nbsp\u2003em  \n",
    "cjk_mixed": "日本語のテキスト、中文文本。한국어 텍스트 Ελληνικά русский текст العربية",
    "numbers": "3.14159 1234567890 ٣٤٥ 1e10 0x1F -42 +7 100%",
    "contractions": "I'M you'RE we'LL they'D 's 't 're 've 'm 'll 'd ''s",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_plain_text_equals_ours(hf_tok, ours, name):
    text = SAMPLES[name]
    assert hf_tok(text).input_ids == ours.encode_text(text)
    assert hf_tok.decode(ours.encode_text(text)) == text


def _random_strings(n: int, seed: int = 1234) -> list[str]:
    """Strings from pools that stress the pre-tokenizer regex and the byte-level BPE."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789", " \t\n\r\x0b\x0c\u00a0\u2003\u3000", "'\"`.,;:!?-_()[]{}<>/\\|@#$%^&*+=~",
        "äöüÄÖÜßéèêàçñœøå", "日本語中文한국어", "αβγδΩЖжщ", "😀🎉👍🏽🇩🇪👩‍👩‍👧", "\u0301\u0308\u200d\ufe0f",
    ]
    out = []
    for _ in range(n):
        length = rng.randint(1, 40)
        chars = []
        for _ in range(length):
            r = rng.random()
            if r < 0.08:  # any code point of the BMP or beyond (no surrogates)
                cp = rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x10FFFF)])
                chars.append(chr(cp))
            elif r < 0.12:
                chars.append(rng.choice(["'s", "'ll", "'ve", "'re", "'d", "'m", "'t", "'S"]))
            else:
                chars.append(rng.choice(rng.choice(pools)))
        out.append("".join(chars))
    return out


def test_random_strings_equal_ours(hf_tok, ours):
    texts = _random_strings(2000)
    theirs = hf_tok(texts).input_ids
    mine = ours.encode_batch_text(texts, num_threads=2)
    bad = [(t, a, b) for t, a, b in zip(texts, theirs, mine) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"


def test_tags_are_added_special_tokens_with_pinned_ids(hf_tok):
    for tag, i in SPECIAL_TOKENS.items():
        assert hf_tok.convert_tokens_to_ids(tag) == i
        assert hf_tok.convert_ids_to_tokens(i) == tag
    assert hf_tok.convert_tokens_to_ids("<|endoftext|>") == ENDOFTEXT_ID
    assert hf_tok.pad_token_id == ENDOFTEXT_ID and hf_tok.eos_token == "<myPT_eot>"
    assert hf_tok.bos_token is None and len(hf_tok) == 50276
    # the one documented difference: tag text inside a string becomes the tag in HF ...
    assert hf_tok("a<myPT_eot>b").input_ids == [64, SPECIAL_TOKENS["<myPT_eot>"], 65]
    # ... unless asked for plain text, which is what our tokenizer always does
    plain = transformers.AutoTokenizer.from_pretrained(hf_tok.name_or_path, split_special_tokens=True)
    assert plain("a<myPT_eot>b").input_ids == get_tokenizer().encode_text("a<myPT_eot>b")


# ----------------------------------------------------------------------------- chat template


def _ids(hf_tok, messages, **kw):
    out = hf_tok.apply_chat_template(messages, tokenize=True, **kw)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def _call(name, arguments, as_string=False):
    args = json.dumps(arguments, ensure_ascii=False) if as_string else arguments
    return {"type": "function", "function": {"name": name, "arguments": args}}


def test_single_turn(hf_tok, ours):
    record = {"system": "You are MyPT.", "messages": [
        {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]}
    messages = [{"role": "system", "content": "You are MyPT."},
                {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]
    assert _ids(hf_tok, messages) == serialize_episode(record, tokenizer=ours)[0]
    assert _ids(hf_tok, messages[:2], add_generation_prompt=True) == build_prompt(record["messages"][:1],
                                                                                  system="You are MyPT.")
    # the protocol written out: tags by id, contents as plain BPE spans, nothing between
    t = ours.encode_text
    expected = ([SPECIAL_TOKENS["<myPT_system>"], *t("You are MyPT."), SPECIAL_TOKENS["</myPT_system>"],
                 SPECIAL_TOKENS["<myPT_user>"], *t("Say hello."), SPECIAL_TOKENS["</myPT_user>"],
                 SPECIAL_TOKENS["<myPT_assistant>"], *t("Hello!"), SPECIAL_TOKENS["</myPT_assistant>"],
                 SPECIAL_TOKENS["<myPT_eot>"]])
    assert _ids(hf_tok, messages) == expected


def test_multi_turn_eot_after_every_turn(hf_tok, ours):
    turns = [("Hi, who are you?", "I am MyPT."), ("Wie geht's?", "Gut, danke! 😊"), ("  spaces  ", "\nok\n")]
    record = {"messages": [m for q, a in turns for m in ({"role": "user", "content": q},
                                                         {"role": "assistant", "content": a})]}
    messages = [dict(m) for m in record["messages"]]
    ids = _ids(hf_tok, messages)
    assert ids == serialize_episode(record, tokenizer=ours)[0]
    assert ids.count(SPECIAL_TOKENS["<myPT_eot>"]) == 3
    assert _ids(hf_tok, messages[:3], add_generation_prompt=True) == build_prompt(record["messages"][:3])
    assert _ids(hf_tok, messages[:3], add_generation_prompt=True)[-1] == SPECIAL_TOKENS["<myPT_assistant>"]


def test_rag_context_think_cite(hf_tok, ours):
    record = {"system": "Answer from the documents.", "messages": [
        {"role": "user", "content": "Wann wurde die Brücke gebaut?",
         "context": "[1] Die Brücke wurde 1932 eröffnet.\n[2] Sie ist 503 m lang."},
        {"role": "assistant", "content": "Sie wurde 1932 eröffnet.", "think": "Dokument 1 nennt das Jahr.",
         "cite": "[1]"},
        {"role": "user", "content": "Und wie lang?"},
        {"role": "assistant", "content": "503 m.", "cite": "[2]"}]}
    messages = [{"role": "system", "content": "Answer from the documents."}]
    messages += [{k: v for k, v in m.items()} for m in record["messages"]]
    assert _ids(hf_tok, messages) == serialize_episode(record, tokenizer=ours)[0]
    # reasoning_content (OpenAI/vLLM name) is read as think
    alias = [dict(m) for m in messages]
    alias[2]["reasoning_content"] = alias[2].pop("think")
    assert _ids(hf_tok, alias) == serialize_episode(record, tokenizer=ours)[0]
    assert _ids(hf_tok, messages[:2], add_generation_prompt=True) == build_prompt(
        record["messages"][:1], system="Answer from the documents.")


def test_multi_step_tool_conversation(hf_tok, ours):
    search_args = {"query": "Größe Eiffelturm", "top_k": 3}
    result1 = {"documents": [{"id": "d1", "text": "Der Eiffelturm ist 330 m hoch."}]}
    record = {"system": "You can use tools.", "messages": [
        {"role": "user", "content": "Wie hoch ist der Eiffelturm in Fuß?"},
        {"role": "assistant_toolcall", "name": "workspace.search", "arguments": search_args,
         "think": "Erst suchen."},
        {"role": "toolresult", "name": "workspace.search", "content": result1},
        {"role": "assistant_toolcall", "name": "calc", "arguments": {"expression": "330 * 3.2808"}},
        {"role": "toolresult", "name": "calc", "content": "1082.66"},
        {"role": "assistant", "content": "Etwa 1083 Fuß.", "cite": "d1"},
        {"role": "user", "content": "Danke!"},
        {"role": "assistant", "content": "Gern."}]}
    messages = [
        {"role": "system", "content": "You can use tools."},
        {"role": "user", "content": "Wie hoch ist der Eiffelturm in Fuß?"},
        {"role": "assistant", "content": "", "think": "Erst suchen.",
         "tool_calls": [_call("workspace.search", search_args)]},
        {"role": "tool", "name": "workspace.search", "content": result1},
        {"role": "assistant", "content": None, "tool_calls": [_call("calc", {"expression": "330 * 3.2808"})]},
        {"role": "tool", "content": "1082.66"},
        {"role": "assistant", "content": "Etwa 1083 Fuß.", "cite": "d1"},
        {"role": "user", "content": "Danke!"},
        {"role": "assistant", "content": "Gern."}]
    expected = serialize_episode(record, tokenizer=ours)[0]
    assert _ids(hf_tok, messages) == expected
    # the toolcall text is our json.dumps({"name": ..., **arguments}) layout
    text = hf_tok.apply_chat_template(messages, tokenize=False)
    assert '<myPT_toolcall>{"name": "workspace.search", "query": "Größe Eiffelturm", "top_k": 3}</myPT_toolcall>' in text
    # prompts after each tool result continue the same sequence
    for cut, ours_cut in ((4, 3), (6, 5)):
        prompt = _ids(hf_tok, messages[:cut], add_generation_prompt=True)
        assert prompt == build_prompt(record["messages"][:ours_cut], system="You can use tools.")
        assert expected[:len(prompt)] == prompt
    # OpenAI-style JSON-string arguments (json.dumps layout) give the same ids
    as_strings = [dict(m) for m in messages]
    as_strings[2]["tool_calls"] = [_call("workspace.search", search_args, as_string=True)]
    as_strings[4]["tool_calls"] = [_call("calc", {"expression": "330 * 3.2808"}, as_string=True)]
    assert _ids(hf_tok, as_strings) == expected
    # content beside tool_calls is the think, as convert_hf_dataset maps it
    preamble = [dict(m) for m in messages]
    preamble[2] = {"role": "assistant", "content": " Erst suchen. ", "tool_calls": messages[2]["tool_calls"]}
    assert _ids(hf_tok, preamble) == expected


def test_parallel_calls_interleave_with_results(hf_tok, ours):
    record = {"messages": [
        {"role": "user", "content": "Weather in Bern and Basel?"},
        {"role": "assistant_toolcall", "name": "weather", "arguments": {"city": "Bern"}},
        {"role": "toolresult", "name": "weather", "content": {"t": 21}},
        {"role": "assistant_toolcall", "name": "weather", "arguments": {"city": "Basel"}},
        {"role": "toolresult", "name": "weather", "content": {"t": 23}},
        {"role": "assistant", "content": "Bern 21°, Basel 23°."}]}
    messages = [
        {"role": "user", "content": "Weather in Bern and Basel?"},
        {"role": "assistant", "tool_calls": [_call("weather", {"city": "Bern"}), _call("weather", {"city": "Basel"})]},
        {"role": "tool", "content": {"t": 21}}, {"role": "tool", "content": {"t": 23}},
        {"role": "assistant", "content": "Bern 21°, Basel 23°."}]
    assert _ids(hf_tok, messages) == serialize_episode(record, tokenizer=ours)[0]


def test_template_refuses_what_the_protocol_cannot_say(hf_tok):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="only the first message"):
        hf_tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
                                   tokenize=False)
    with pytest.raises(TemplateError, match="unknown message role"):
        hf_tok.apply_chat_template([{"role": "narrator", "content": "a"}], tokenize=False)
    with pytest.raises(TemplateError, match="JSON object"):
        hf_tok.apply_chat_template([{"role": "user", "content": "a"},
                                    {"role": "assistant", "tool_calls": [_call("f", "[1, 2]")]}], tokenize=False)
