"""Registries: pull and push over the Ollama (Docker v2) registry protocol, hf.co names, direct
URLs and the built-in registry of known models."""

from .errors import RegistryError
from .pull import pull_model
from .push import push_model
from .settings import TransferSettings

__all__ = ["RegistryError", "TransferSettings", "pull_model", "push_model"]
