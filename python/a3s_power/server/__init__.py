"""The HTTP server: Ollama's native API, the OpenAI API and the Anthropic API over one scheduler."""

from .app import ServerState, create_app

__all__ = ["ServerState", "create_app"]
