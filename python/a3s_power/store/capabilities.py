"""A model's capabilities, derived as Ollama's ``Model.Capabilities`` derives them.

- ``embedding`` when the GGUF has ``<arch>.pooling_type``, else ``completion``; ``rerank`` instead of
  ``embedding`` when that pooling is llama.cpp's rank pooling (a reranker scores, it does not embed);
- ``vision`` when the GGUF has ``<arch>.vision.block_count`` or the model has a projector;
- ``tools`` / ``insert`` when the prompt template uses tools / a suffix;
- ``thinking`` when the template has thinking tags (or the model is gpt-oss).

Ollama asks this of the Go TEMPLATE; a model without one is rendered here with the GGUF's Jinja
chat template, so that template is asked the same questions in its own syntax.
"""

from __future__ import annotations

import re
from typing import Any

_RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK
_GO_TOOLS = re.compile(r"\.Tools\b")
_GO_SUFFIX = re.compile(r"\.Suffix\b")
_JINJA_TOOLS = re.compile(r"\btools\b")
_THINK_TAGS = (("<think>", "</think>"), ("<thinking>", "</thinking>"), ("<|channel|>analysis", "<|end|>"),
               ("<|START_THINKING|>", "<|END_THINKING|>"), ("[THINK]", "[/THINK]"))


def is_go_template(template: str) -> bool:
    return "{{" in template and "{%" not in template


def _has_thinking(template: str, go: bool) -> bool:
    if go and not re.search(r"\.Thinking\b|\.IsThinkSet\b|\.Think\b", template):
        return False
    if not go and ("enable_thinking" in template or "reasoning_content" in template):
        return True
    return any(open_ in template and close in template for open_, close in _THINK_TAGS)


def derive(metadata: dict[str, Any], template: str | None, *, has_projector: bool = False,
           family: str = "") -> list[str]:
    """The capability list, in Ollama's order."""
    arch = str(metadata.get("general.architecture", ""))
    caps: list[str] = []
    pooling = metadata.get(f"{arch}.pooling_type")
    caps.append("completion" if pooling is None else ("rerank" if pooling == _RANK_POOLING else "embedding"))
    vision = f"{arch}.vision.block_count" in metadata
    if vision:
        caps.append("vision")
    if template:
        go = is_go_template(template)
        if (_GO_TOOLS if go else _JINJA_TOOLS).search(template):
            caps.append("tools")
        if go and _GO_SUFFIX.search(template):
            caps.append("insert")
        elif not go and metadata.get("tokenizer.ggml.fim_pre_token_id") is not None:
            caps.append("insert")  # Jinja templates have no suffix: FIM tokens are what make insert work
    if has_projector and "vision" not in caps:
        caps.append("vision")
    if (template and _has_thinking(template, is_go_template(template))) or family in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    return caps
