"""What the rest of A3S Power knows about a model in the store."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import A3SPowerError


class ModelNotFound(A3SPowerError):
    http_status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class InvalidModelName(A3SPowerError, ValueError):
    http_status = 400


# A full disk, or a full quota (EDQUOT): either way nothing more can be written to the store.
_NO_SPACE = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def is_no_space(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, is a file system out of space."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def describe(exc: BaseException) -> str:
    """An error's text for a client: an OSError's reason without the file it names."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class StoreFull(A3SPowerError):
    """The model store's file system is full; the message names the store's folder, nothing deeper."""

    status = http_status = 507  # Insufficient Storage

    def __init__(self, root: os.PathLike | str) -> None:
        super().__init__(f"no space left on device: {shown_path(root)}")


def shown_path(path: os.PathLike | str) -> str:
    """A folder as an error may show it: the home folder's part as ``~``."""
    text = os.fspath(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home.rstrip("/") + "/")):
        return "~" + text[len(home.rstrip("/")):]
    return text


@dataclass
class LocalModel:
    """A model as its manifest describes it: the weights and every layer beside them."""

    name: str  # short display name, as Ollama shows it ("smollm2:135m", "hf.co/u/r:Q4_K_M")
    model_path: Path  # the GGUF weights
    digest: str = ""  # hex sha256 of the manifest bytes
    size: int = 0  # all layers plus config
    modified_at: datetime | None = None
    template: str | None = None  # Go template (TEMPLATE layer); None: use the GGUF's Jinja template
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # PARAMETER values, typed; "stop" is a list
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    adapter_paths: list[Path] = field(default_factory=list)
    projector_path: Path | None = None
    # format, family, families, parameter_size, quantization_level
    details: dict[str, Any] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    # A remote model has no weights: requests go to remote_model on remote_host (engine/remote.py).
    remote_host: str = ""
    remote_model: str = ""
    # From the config blob (Ollama's ConfigV2): the renderer and parser Ollama would use for the
    # prompt and the answer, and the least Ollama version the model asks for (show reports them).
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    # Why the weights cannot run here ("" when they can): a safetensors model (store/tensor_model.py).
    unsupported: str = ""
    # A blob in Ollama's own GGUF dialect (store/dialect): translated into derived files under
    # ``store_root`` before it loads; ``model_path`` stays the original blob.
    translation: Any = None
    model_digest: str = ""
    store_root: Path | None = None
