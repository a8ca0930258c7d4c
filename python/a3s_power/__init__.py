"""A3S Power: a local LLM server, Ollama-, OpenAI- and Anthropic-compatible, over llama.cpp.

``Power`` and ``AsyncPower`` run it inside a program (docs/api.md); ``a3s_power.api`` holds the
request and answer types."""

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .power import AsyncPower, Power

__all__ = ["AsyncPower", "Power", "__version__"]


def __getattr__(name: str) -> Any:
    # Late: importing the package (the CLI does) must not load the engine and llama.cpp.
    if name in ("AsyncPower", "Power"):
        from . import power

        return getattr(power, name)
    raise AttributeError(f"module 'a3s_power' has no attribute {name!r}")
