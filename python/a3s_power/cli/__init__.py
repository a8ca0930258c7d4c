"""The ``a3s-power`` command line, shaped like Ollama's: ``root`` (the group, ``serve`` and ``run``),
``models`` (pull, push, list, show, create, ps, ...), ``run`` (a prompt or a conversation),
``connect`` (the way to the server) and ``format`` (what the commands print)."""

from .root import main

__all__ = ["main"]
