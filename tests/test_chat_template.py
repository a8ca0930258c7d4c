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
