"""A3S Power: a local LLM server, Ollama-, OpenAI- and Anthropic-compatible, over llama.cpp."""

from .version import __version__

__all__ = ["__version__"]
