"""Ollama's cloud, as a local server sees it: whether it is switched off (``OLLAMA_NO_CLOUD``, or
``{"disable_ollama_cloud": true}`` in ``~/.ollama/server.json``), and model names that mean a model
on ollama.com (``gpt-oss:120b-cloud``, ``qwen3:cloud``) without a local manifest."""

from __future__ import annotations

import json
from pathlib import Path

from . import auth
from .config import Config
from .hosts import remote_url
from .store.details import details_from_config
from .store.types import LocalModel


def status(config: Config) -> tuple[bool, str]:
    """Whether the cloud is off, and who said so: "none", "env", "config" or "both"."""
    try:
        settings = json.loads((auth.key_path().parent / "server.json").read_text())
        by_file = bool(isinstance(settings, dict) and settings.get("disable_ollama_cloud"))
    except (OSError, ValueError):
        by_file = False
    by_env = config.no_cloud
    return by_env or by_file, {(True, True): "both", (True, False): "env", (False, True): "config"}.get(
        (by_env, by_file), "none")


def disabled_error(operation: str = "") -> str:
    return "ollama cloud is disabled" + (f": {operation}" if operation else "")


def cloud_model(config: Config, name: str) -> LocalModel | None:
    """The remote model a ``:cloud`` / ``-cloud`` name means, on ``cloud_url``; None for other names."""
    base, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    if tag == "cloud":
        remote = base
    elif tag.endswith("-cloud"):
        remote = f"{base}:{tag[:-len('-cloud')]}"
    else:
        return None
    host = remote_url(config.cloud_url)
    return LocalModel(name=name, model_path=Path(), remote_host=host, remote_model=remote,
                      capabilities=["completion", "tools", "thinking"],
                      details=details_from_config({"remote_host": host}))
