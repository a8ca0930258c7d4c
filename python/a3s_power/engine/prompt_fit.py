"""Fitting a prompt into the model's context, as Ollama does.

Text is cut before it is tokenized (a huge prompt is never tokenized whole); a conversation drops
its oldest messages, never a system message nor the last one, until it fits; tokens that still do
not fit are shifted as Ollama's context shift does, keeping the start and as much of the end as
leaves room to answer. With truncation off, a prompt that does not fit is refused instead."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidOptionError
from ..prompt.render import PromptTemplate
from .options import Options

PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the model; use a model "
                   "with a longer context or shorten the prompt")
TRUNCATE_OFF = ("the prompt is longer than the context length currently available to the model (truncate is "
                "off); use a model with a longer context or shorten it")
KEEP_AT_START = 4  # tokens a shifted prompt keeps from its start


def cut_to_context(model: Any, text: str, options: Options, allow_cut: bool) -> str:
    """A prompt's text cut before tokenizing to what fit_tokens can keep of it (see
    LoadedModel.text_for_context); refused at once, untokenized, when it cannot fit and
    cutting is not allowed."""
    cut = model.text_for_context(text, options.load.num_ctx)
    if cut is not text and not allow_cut:
        raise InvalidOptionError(PROMPT_TOO_LONG)
    return cut


def fit_tokens(tokens: list[int], options: Options, shift: bool) -> list[int]:
    """Ollama's context-shift truncation of a prompt that does not fit: keep the first tokens and
    as much of the end as leaves room to answer."""
    n_ctx = options.load.num_ctx
    if len(tokens) < n_ctx:
        return tokens
    if not shift:
        raise InvalidOptionError(PROMPT_TOO_LONG)
    limit = n_ctx - max((n_ctx - KEEP_AT_START) // 2, 1)
    return tokens[:KEEP_AT_START] + tokens[len(tokens) - (limit - KEEP_AT_START):]


@dataclass(frozen=True)
class Conversation:
    """What a chat template renders: the messages, the tools, and thinking (on, and its level)."""

    messages: list[dict]
    tools: list[dict] | None = None
    think: bool | None = None
    think_level: str = ""

    def render(self, template: PromptTemplate) -> str:
        return template.render_chat(self.messages, tools=self.tools, think=self.think, think_level=self.think_level)


def render_conversation(model: Any, template: PromptTemplate, conversation: Conversation, options: Options,
                        truncate: bool) -> tuple[str, list[int]]:
    """The rendered conversation and its tokens, the oldest messages dropped until it fits."""

    def render(kept: Conversation) -> tuple[str, list[int]]:
        text = kept.render(template)
        return text, model.tokenize_prompt(cut_to_context(model, text, options, truncate))

    text, tokens = render(conversation)
    n_ctx = options.load.num_ctx
    if len(tokens) >= n_ctx and not truncate:
        raise InvalidOptionError(TRUNCATE_OFF)
    kept = list(conversation.messages)
    while len(tokens) >= n_ctx:
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if not droppable:
            break
        del kept[droppable[0]]
        text, tokens = render(replace(conversation, messages=kept))
    return text, tokens
