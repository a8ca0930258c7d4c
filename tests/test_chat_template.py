"""Jinja chat templates from GGUF files."""

from __future__ import annotations

import pytest

from a3s_power.prompt.chat_template import ChatTemplate, TemplateError


def test_smollm2_template_renders_chatml(smollm2):
    template = ChatTemplate(smollm2.chat_template())
    text = template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_smollm2_template_adds_its_default_system_prompt(smollm2):
    text = ChatTemplate(smollm2.chat_template()).render([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_qwen_template_renders_tools(qwen_path):
    from a3s_power.core import _core

    p = _core.ModelParams()
    p.vocab_only = True
    model = _core.Model(qwen_path, p)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    text = ChatTemplate(model.chat_template()).render([{"role": "user", "content": "Weather in Paris?"}], tools=tools)
    assert "<tools>" in text and '"name": "get_weather"' in text
    assert text.endswith("<|im_start|>assistant\n")
    model.close()


def test_missing_template_falls_back_to_chatml():
    text = ChatTemplate(None).render([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_template_helpers():
    source = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}"
        "{% if strftime_now('%Y') | int > 2000 %}!{% endif %}"
    )
    assert ChatTemplate(source, bos_token="<s>").render([{"role": "user", "content": "é"}]) == '<s>"é"!'


def test_raise_exception_and_bad_syntax_are_template_errors():
    refusing = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        refusing.render([])
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate("{% for %}")


def test_templates_are_sandboxed():
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}").render([])


# Hugging Face chat templates as the GGUF files of these families carry them.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
           "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
        "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

TURNS = [{"role": "user", "content": "Hi "}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "How are you?"}]


@pytest.mark.parametrize(
    "source, bos, eos, messages, expected",
    [
        (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", [{"role": "system", "content": "Be brief."}] + TURNS,
         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        (GEMMA, "<bos>", "<eos>", TURNS,
         "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
         "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"),
        (MISTRAL, "<s>", "</s>", TURNS, "<s>[INST] Hi  [/INST]Hello!</s>[INST] How are you? [/INST]"),
        (PHI3, "<s>", "<|endoftext|>", [{"role": "system", "content": "Be brief."}] + TURNS,
         "<|system|>\nBe brief.<|end|>\n<|user|>\nHi <|end|>\n<|assistant|>\nHello!<|end|>\n"
         "<|user|>\nHow are you?<|end|>\n<|assistant|>\n"),
    ],
)
def test_real_jinja_templates_render_as_transformers_does(source, bos, eos, messages, expected):
    assert ChatTemplate(source, bos_token=bos, eos_token=eos).render(messages) == expected


def test_gemma_refuses_a_system_message_with_its_own_words():
    with pytest.raises(TemplateError, match="System role not supported"):
        ChatTemplate(GEMMA, "<bos>").render([{"role": "system", "content": "x"}] + TURNS)


@pytest.mark.parametrize("calls", ["abc", [1], [{"function": "f"}]])
def test_malformed_tool_calls_are_a_template_error_not_a_crash(calls):
    from a3s_power.prompt.render import PromptTemplate

    with pytest.raises(TemplateError):
        PromptTemplate(None, None).render_chat([{"role": "assistant", "content": "", "tool_calls": calls}])
