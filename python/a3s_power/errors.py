"""The package's exceptions. The C++ core raises these same classes."""


class A3SPowerError(Exception):
    """Base class of every error A3S Power raises on purpose."""


class ModelLoadError(A3SPowerError):
    """A model file could not be loaded: missing, not GGUF, truncated, unsupported, or out of memory."""


class InvalidOptionError(A3SPowerError, ValueError):
    """An option or input is impossible (num_ctx 0, a negative thread count, a bad grammar, ...)."""


class InferenceError(A3SPowerError):
    """Generation failed after the request was accepted."""
