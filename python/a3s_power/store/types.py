"""What the rest of A3S Power knows about a model in the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import A3SPowerError


class ModelNotFound(A3SPowerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class InvalidModelName(A3SPowerError, ValueError):
    pass


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
    details: dict[str, Any] = field(default_factory=dict)  # format, family, families, parameter_size, quantization_level
    capabilities: list[str] = field(default_factory=list)
    # A remote model has no weights: requests go to remote_model on remote_host (engine/remote.py).
    remote_host: str = ""
    remote_model: str = ""
