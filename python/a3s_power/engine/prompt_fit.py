"""Fitting a prompt into the model's context, as Ollama does.

Text is cut before it is tokenized (a huge prompt is never tokenized whole); a conversation drops
its oldest messages, never a system message nor the last one, until it fits; tokens that still do
not fit are shifted as Ollama's context shift does, keeping the start and as much of the end as
leaves room to answer. With truncation off, a prompt that does not fit is refused instead."""

from __future__ import annotations

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


def render_conversation(model: Any, template: PromptTemplate, history: list[dict], tools: list[dict] | None,
                        think: tuple[bool | None, str], options: Options, truncate: bool) -> tuple[str, list[int]]:
    """The rendered conversation and its tokens, the oldest messages dropped until it fits.
    ``think`` is (on, level) as the template takes them."""
    think_on, level = think

    def render(messages: list[dict]) -> tuple[str, list[int]]:
        text = template.render_chat(messages, tools=tools, think=think_on, think_level=level)
        return text, model.tokenize_prompt(cut_to_context(model, text, options, truncate))

    text, tokens = render(history)
    n_ctx = options.load.num_ctx
    if len(tokens) >= n_ctx and not truncate:
        raise InvalidOptionError(TRUNCATE_OFF)
    kept = list(history)
    while len(tokens) >= n_ctx:
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if not droppable:
            break
        del kept[droppable[0]]
        text, tokens = render(kept)
    return text, tokens
