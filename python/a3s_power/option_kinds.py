"""Ollama's options by name: which are fixed when a model loads, which shape one request, the type
each takes, and how a value given as text or JSON gets that type (Ollama's ``api.FormatParams``).

Both a Modelfile's PARAMETER lines (store/parameters.py) and a request's options (engine/options.py)
need this, so it sits below both. engine/options.py declares the same names as the fields of
``LoadOptions`` and ``Options``, with the core's defaults; tests/test_option_kinds.py holds the two
together.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidOptionError

# Accepted for compatibility; they change nothing here.
IGNORED_OPTIONS = frozenset({"tfs_z", "low_vram", "f16_kv", "logits_all", "vocab_only", "num_gqa",
                             "rope_frequency_base", "rope_frequency_scale"})

# Each option's type, written as on the fields of engine/options.py's LoadOptions and Options.
LOAD_OPTIONS: dict[str, str] = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int", "split_mode": "str",
    "tensor_split": "tuple[float, ...]", "use_mmap": "bool", "use_mlock": "bool", "num_thread": "int",
    "num_thread_batch": "int", "numa": "bool", "flash_attention": "bool | None", "kv_cache_type": "str",
    "embedding": "bool", "num_parallel": "int", "stream_interval_ms": "int", "inference_nice": "int",
    "prompt_cache_mb": "int", "kv_unified": "bool", "backend_sampling": "bool",
}
REQUEST_OPTIONS: dict[str, str] = {
    "num_keep": "int", "seed": "int", "num_predict": "int", "top_k": "int", "top_p": "float", "min_p": "float",
    "typical_p": "float", "repeat_last_n": "int", "temperature": "float", "repeat_penalty": "float",
    "presence_penalty": "float", "frequency_penalty": "float", "penalize_newline": "bool", "mirostat": "int",
    "mirostat_tau": "float", "mirostat_eta": "float", "stop": "tuple[str, ...]",
}


def coerce(name: str, kind: Any, value: Any) -> Any:
    """Types a value as Ollama's api.FormatParams would, naming the option when it cannot."""
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise InvalidOptionError(f"invalid option {name}: expected a boolean, got {value!r}")
    if kind in (int, "int"):
        if isinstance(value, bool):
            raise InvalidOptionError(f"invalid option {name}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise InvalidOptionError(f"invalid option {name}: expected an integer, got {value!r}")
    if kind in (float, "float"):
        if isinstance(value, bool):
            raise InvalidOptionError(f"invalid option {name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"invalid option {name}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InvalidOptionError(f"invalid option {name}: must be finite, got {value!r}")
        return number
    if kind in (str, "str"):
        if not isinstance(value, str):
            raise InvalidOptionError(f"invalid option {name}: expected a string, got {value!r}")
        return value
    return value
