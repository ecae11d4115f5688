"""The Jinja chat template of an exported model: the MyPT protocol from HF/OpenAI messages.

``tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)``
gives the same ids as :func:`mypt_lightning.tokens.protocol.build_prompt` of the same
conversation, and without the generation prompt the same ids as ``serialize_episode``
(tests/test_hf_chat_template.py). Message mapping (ours on the right, protocol.py)::

    {"role": "system", "content": S}        (first only)  system S
    {"role": "user", "content": Q, "context": C}           user Q with context C
    {"role": "assistant", "content": A, "think": T, "cite": R}   assistant (T, R optional;
                                              "reasoning_content" is read as think)
    {"role": "assistant", "content": P, "tool_calls": [CALL, ...], "think": T}
         -> one assistant_toolcall per CALL; the think goes with the first call, and
            P (stripped) is the think when there is no T (as convert_hf_dataset does)
    CALL = {"type": "function", "function": {"name": N, "arguments": {...}}}
         -> <myPT_toolcall>{"name": N, **arguments}</myPT_toolcall> (json.dumps layout)
    {"role": "tool", "content": X}                           toolresult X (a dict as JSON)
    {"role": "assistant_context", "content": X}              assistant_context X

Several calls in one message are interleaved with the tool messages that follow, as our
protocol wants (call, result, call, result). An assistant answer followed by a user
message, or last in the list, gets ``<myPT_eot>``; ``add_generation_prompt`` appends
``<myPT_assistant>``. Tool ``arguments`` should be a dict (transformers and vLLM pass
dicts); a JSON-object string is spliced in as written, so only a ``json.dumps`` layout
gives our exact tokens. The ``tools`` argument of apply_chat_template is not rendered:
MyPT learns its tools from the system prompt.

Difference that a HF template cannot avoid: the rendered string is tokenized with the
tags as added tokens, so a tag string inside content (a user typing "<myPT_eot>")
becomes the tag id. ``protocol.py`` and ``tools/chat.py`` always keep content plain.
"""

from __future__ import annotations

# Whitespace control: every template line is trimmed ({%- ... -%}), so the output holds
# exactly the tags and the contents, nothing between them (protocol.py inserts nothing).
CHAT_TEMPLATE = """\
{%- macro toolcall(call, think) -%}
    {%- set f = call.function if call.function is defined else call -%}
    <myPT_assistant>
    {%- if think -%}<myPT_think>{{ think }}</myPT_think>{%- endif -%}
    <myPT_toolcall>{"name": {{ f.name | tojson }}
    {%- if f.arguments is string -%}
        {%- set body = f.arguments | trim -%}
        {%- if not (body.startswith('{') and body.endswith('}')) -%}
            {{ raise_exception('tool call arguments must be a JSON object') }}
        {%- endif -%}
        {%- set inner = body[1:-1] | trim -%}
        {%- if inner -%}, {{ inner }}{%- endif -%}
    {%- elif f.arguments is mapping -%}
        {%- for key, value in f.arguments.items() -%}, {{ key | tojson }}: {{ value | tojson }}{%- endfor -%}
    {%- endif -%}
    }</myPT_toolcall></myPT_assistant>
{%- endmacro -%}
{%- set ns = namespace(calls=[], next=0) -%}
{%- for message in messages -%}
    {%- set role = message.role -%}
    {%- set content = message.content if message.content is not none else '' -%}
    {%- if role == 'system' -%}
        {%- if not loop.first -%}{{ raise_exception('only the first message may be a system message') }}{%- endif -%}
        {%- if content -%}<myPT_system>{{ content }}</myPT_system>{%- endif -%}
    {%- elif role == 'user' -%}
        <myPT_user>
        {%- if message.context -%}<myPT_user_context>{{ message.context }}</myPT_user_context>{%- endif -%}
        {{ content }}</myPT_user>
    {%- elif role == 'assistant_context' -%}
        <myPT_assistant_context>{{ content }}</myPT_assistant_context>
    {%- elif role == 'tool' or role == 'toolresult' -%}
        <myPT_toolresult>
        {%- if content is string -%}{{ content }}{%- else -%}{{ content | tojson }}{%- endif -%}
        </myPT_toolresult>
        {%- if ns.next < ns.calls | length -%}
            {{ toolcall(ns.calls[ns.next], none) }}
            {%- set ns.next = ns.next + 1 -%}
        {%- endif -%}
    {%- elif role == 'assistant' -%}
        {%- set think = message.think if message.think else (message.reasoning_content if message.reasoning_content else '') -%}
        {%- if message.tool_calls -%}
            {%- if content | trim -%}
                {%- if think -%}{{ raise_exception('an assistant message with tool_calls has both content and think') }}{%- endif -%}
                {%- set think = content | trim -%}
            {%- endif -%}
            {{ toolcall(message.tool_calls[0], think) }}
            {%- set ns.calls = message.tool_calls -%}
            {%- set ns.next = 1 -%}
        {%- else -%}
            <myPT_assistant>
            {%- if think -%}<myPT_think>{{ think }}</myPT_think>{%- endif -%}
            {{ content }}
            {%- if message.cite -%}<myPT_cite>{{ message.cite }}</myPT_cite>{%- endif -%}
            </myPT_assistant>
            {%- if loop.last or messages[loop.index0 + 1].role == 'user' -%}<myPT_eot>{%- endif -%}
        {%- endif -%}
    {%- else -%}
        {{ raise_exception('unknown message role: ' + role) }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<myPT_assistant>{%- endif -%}
"""

__all__ = ["CHAT_TEMPLATE"]
