"""Settings read once from the environment (Ollama's variables) at start-up.

The TOML file under $A3S_POWER_HOME and CLI overrides build on this; every other module asks
``get_config()`` rather than reading os.environ itself.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

from .errors import InvalidOptionError


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip().strip("\"'")
    return value or None


def _env_bool(name: str) -> bool | None:
    # Ollama: an unparseable value counts as true.
    value = _env(name)
    if value is None:
        return None
    return value.lower() not in ("0", "false", "f", "no", "off")


def _env_int(name: str) -> int | None:
    value = _env(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidOptionError(f"environment variable {name}: {value!r} is not an integer") from None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


class Config(BaseModel):
    home: Path
    host: str = "127.0.0.1:11434"
    num_parallel: int = 4
    context_length: int = 4096
    flash_attention: bool = False
    kv_cache_type: str = "f16"
    debug: int = 0
    keep_alive: float = 300.0  # seconds; negative = forever
    max_loaded_models: int = 3
    max_queue: int = 512
    origins: tuple[str, ...] = ()
    models_dir: Path | None = None
    # Least time between two deliveries of a stream's tokens to Python (see ContextParams).
    stream_interval_ms: int = 25

    @classmethod
    def from_env(cls) -> "Config":
        home = Path(_env("A3S_POWER_HOME") or Path.home() / ".a3s" / "power")
        values: dict = {"home": home}
        if (v := _env("OLLAMA_HOST")) is not None:
            values["host"] = v
        if (v := _env_int("OLLAMA_NUM_PARALLEL")) is not None and v > 0:
            values["num_parallel"] = v
        if (v := _env_int("OLLAMA_CONTEXT_LENGTH")) is not None and v > 0:
            values["context_length"] = v
        if (v := _env_bool("OLLAMA_FLASH_ATTENTION")) is not None:
            values["flash_attention"] = v
        if (v := _env("OLLAMA_KV_CACHE_TYPE")) is not None:
            values["kv_cache_type"] = v.lower()
        if (v := _env_int("A3S_POWER_STREAM_INTERVAL_MS")) is not None and v >= 0:
            values["stream_interval_ms"] = v
        if (v := _env("OLLAMA_KEEP_ALIVE")) is not None:
            from .engine.scheduler import parse_keep_alive

            try:
                values["keep_alive"] = parse_keep_alive(float(v) if v.lstrip("-").replace(".", "", 1).isdigit() else v)
            except ValueError as exc:
                raise InvalidOptionError(f"environment variable OLLAMA_KEEP_ALIVE: {exc}") from None
        if (v := _env_int("OLLAMA_MAX_LOADED_MODELS")) is not None and v > 0:
            values["max_loaded_models"] = v
        if (v := _env_int("OLLAMA_MAX_QUEUE")) is not None and v > 0:
            values["max_queue"] = v
        if (v := _env("OLLAMA_ORIGINS")) is not None:
            values["origins"] = tuple(o.strip() for o in v.split(",") if o.strip())
        if (v := _env("OLLAMA_MODELS")) is not None:
            values["models_dir"] = Path(v).expanduser()
        if (v := _env("OLLAMA_DEBUG")) is not None:
            values["debug"] = 2 if v == "2" else (1 if _env_bool("OLLAMA_DEBUG") else 0)
        return cls(**values)


    @property
    def models_root(self) -> Path:
        return self.models_dir or self.home / "models"


@lru_cache(maxsize=1)
def get_config() -> Config:
    return Config.from_env()
