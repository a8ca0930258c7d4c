"""From a conversation to the prompt text a model expects, using the model's own template."""

from __future__ import annotations

from typing import Any, Protocol

from .chat_template import ChatTemplate


class _SpecialTokens(Protocol):
    @property
    def bos_token(self) -> int: ...
    @property
    def eos_token(self) -> int: ...
    def token_to_piece(self, token: int, special: bool = False) -> bytes: ...


class TemplatedModel(Protocol):
    """What a prompt needs of a loaded model: its chat template and its special tokens' text.
    ``engine.runner.LoadedModel`` is one; prompts sit below the engine and never import it."""

    @property
    def chat_template(self) -> str | None: ...
    @property
    def model(self) -> _SpecialTokens: ...


def template_for(model: TemplatedModel) -> ChatTemplate:
    def special_text(token: int) -> str:
        return model.model.token_to_piece(token, True).decode("utf-8", "replace") if token >= 0 else ""

    return ChatTemplate(model.chat_template, special_text(model.model.bos_token), special_text(model.model.eos_token))


def chat_prompt(model: TemplatedModel, messages: list[dict[str, Any]], **extra: Any) -> str:
    return template_for(model).render(messages, **extra)
