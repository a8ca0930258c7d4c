"""The package's exceptions. The C++ core raises these same classes."""


class A3SPowerError(Exception):
    """Base class of every error A3S Power raises on purpose. ``http_status`` is what every API
    answers when one reaches it (server/errors.py status_for): each class knows its own."""

    http_status = 500


class ModelLoadError(A3SPowerError):
    """A model file could not be loaded: missing, not GGUF, truncated, unsupported, or out of memory."""


class InvalidOptionError(A3SPowerError, ValueError):
    """An option or input is impossible (num_ctx 0, a negative thread count, a bad grammar, ...)."""

    http_status = 400


class InferenceError(A3SPowerError):
    """Generation failed after the request was accepted."""


class RemoteError(A3SPowerError):
    """A remote model's host refused or failed a request; ``signin_url`` when it wants a signed-in key."""

    def __init__(self, message: str, status: int = 502, signin_url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status  # the remote host's own status
        self.signin_url = signin_url
