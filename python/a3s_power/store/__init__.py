"""The model store: names, blobs, manifests, the GGUF reader and Modelfiles."""

from .names import ModelName
from .store import ModelStore
from .types import InvalidModelName, LocalModel, ModelNotFound

__all__ = ["InvalidModelName", "LocalModel", "ModelName", "ModelNotFound", "ModelStore"]
