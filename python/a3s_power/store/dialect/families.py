"""Imports every architecture's translation, each of which registers itself."""

from . import deepseekocr, gemma3, gemma4, gptoss, lfm2, mistral3, nemotron_h_moe, qwen35  # noqa: F401
