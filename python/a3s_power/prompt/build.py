"""From a conversation to the prompt text a model expects, using the model's own template."""

from __future__ import annotations

from typing import Any

from ..engine.runner import LoadedModel
from .chat_template import ChatTemplate


def template_for(model: LoadedModel) -> ChatTemplate:
    def special_text(token: int) -> str:
        return model.model.token_to_piece(token, True).decode("utf-8", "replace") if token >= 0 else ""

    return ChatTemplate(model.chat_template, special_text(model.model.bos_token), special_text(model.model.eos_token))


def chat_prompt(model: LoadedModel, messages: list[dict[str, Any]], **extra: Any) -> str:
    return template_for(model).render(messages, **extra)
