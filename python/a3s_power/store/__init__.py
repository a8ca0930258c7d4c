"""The model store: names, blobs, manifests, the GGUF reader and Modelfiles."""

from .types import InvalidModelName, LocalModel, ModelNotFound

__all__ = ["InvalidModelName", "LocalModel", "ModelNotFound"]
