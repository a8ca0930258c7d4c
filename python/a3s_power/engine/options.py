"""Ollama's options: names, types, defaults and validation, and their mapping onto ``_core``.

Load-time options decide how a model is loaded (a change means a reload); the rest shape one
request. Options that Ollama removed are accepted and ignored, as Ollama does, because old
clients still send them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..config import Config, default_threads, get_config
from ..core import _core
from ..errors import InvalidOptionError
from ..option_kinds import IGNORED_OPTIONS, coerce as _coerce

log = logging.getLogger(__name__)

KV_CACHE_TYPES = ("f16", "q8_0", "q4_0", "f32", "bf16")
# How a model spans GPUs: auto lets the scheduler choose (one GPU when the model fits, else layers
# over several); none keeps it on one GPU, layer splits layers over GPUs, row splits every matrix
# (llama.cpp builds whose backend can), tensor splits weights and KV cache (tensor parallelism).
SPLIT_MODES = ("auto", "none", "layer", "row", "tensor")


@dataclass(frozen=True)
class LoadOptions:
    """Options fixed when a model is loaded."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = -1  # -1: the scheduler picks; a device number pins the model to that GPU
    split_mode: str = "auto"
    tensor_split: tuple[float, ...] = ()  # a proportion per GPU; () = the scheduler's choice
    use_mmap: bool = True
    use_mlock: bool = False
    num_thread: int = 0
    num_thread_batch: int = 0
    numa: bool = False
    flash_attention: bool | None = None  # None: auto, llama.cpp enables it where the backend supports it
    kv_cache_type: str = "f16"
    embedding: bool = False
    num_parallel: int = 1
    stream_interval_ms: int = 0
    inference_nice: int = 10  # Config.inference_nice
    prompt_cache_mb: int = 0
    kv_unified: bool = False  # True: one KV buffer for every slot (OLLAMA_MULTIUSER_CACHE)
    backend_sampling: bool = False  # Config.backend_sampling
    # The prompt cache's disk tier: set by the scheduler (prompt_store.py), never by a request.
    prompt_cache_dir: str = ""
    prompt_cache_disk_mb: int = 0

    def model_params(self) -> _core.ModelParams:
        p = _core.ModelParams()
        p.n_gpu_layers = self.num_gpu
        # Unplaced (no GPU inventory to place by): llama.cpp's defaults, layers over every GPU.
        p.main_gpu = max(self.main_gpu, 0)
        p.split_mode = "layer" if self.split_mode == "auto" else self.split_mode
        p.tensor_split = list(self.tensor_split)
        p.use_mmap = self.use_mmap
        p.use_mlock = self.use_mlock
        return p

    def context_params(self) -> _core.ContextParams:
        p = _core.ContextParams()
        p.n_ctx = self.num_ctx
        p.n_batch = self.num_batch
        p.n_ubatch = self.num_batch
        p.n_parallel = self.num_parallel
        p.n_threads = self.num_thread or default_threads()
        p.n_threads_batch = self.num_thread_batch or p.n_threads
        p.flash_attn = "auto" if self.flash_attention is None else ("on" if self.flash_attention else "off")
        p.type_k = p.type_v = self.kv_cache_type
        p.embeddings = self.embedding
        p.stream_interval_ms = self.stream_interval_ms
        p.nice = self.inference_nice
        p.prompt_cache_mb = self.prompt_cache_mb
        p.kv_unified = self.kv_unified
        p.backend_sampling = self.backend_sampling
        p.prompt_cache_dir = self.prompt_cache_dir
        p.prompt_cache_disk_mb = self.prompt_cache_disk_mb
        return p

    def model_key(self) -> tuple:
        """What decides whether the weights themselves must be reloaded."""
        return (self.num_gpu, self.main_gpu, self.split_mode, self.tensor_split, self.use_mmap, self.use_mlock)


# The core's defaults for one request (cpp/sampling.h, cpp/engine.h), the only place they are written.
_SAMPLING = _core.SamplingParams()
_GENERATE = _core.GenerateParams()


@dataclass(frozen=True)
class Options:
    """Every option a request may carry. The defaults of those that shape generation are the C++
    core's (``_core.SamplingParams()``, ``_core.GenerateParams()``): Ollama's, with repeat_penalty 1.0."""

    load: LoadOptions = field(default_factory=LoadOptions)
    num_keep: int = _GENERATE.num_keep  # tokens kept at the start when the context shifts
    seed: int = _SAMPLING.seed
    num_predict: int = _GENERATE.num_predict
    top_k: int = _SAMPLING.top_k
    top_p: float = _SAMPLING.top_p
    min_p: float = _SAMPLING.min_p
    typical_p: float = _SAMPLING.typical_p
    repeat_last_n: int = _SAMPLING.repeat_last_n
    temperature: float = _SAMPLING.temperature
    repeat_penalty: float = _SAMPLING.repeat_penalty
    presence_penalty: float = _SAMPLING.presence_penalty
    frequency_penalty: float = _SAMPLING.frequency_penalty
    penalize_newline: bool = _SAMPLING.penalize_newline
    mirostat: int = _SAMPLING.mirostat
    mirostat_tau: float = _SAMPLING.mirostat_tau
    mirostat_eta: float = _SAMPLING.mirostat_eta
    stop: tuple[str, ...] = ()

    def sampling_params(self, grammar: str = "", logit_bias: dict[int, float] | None = None,
                        grammar_triggers: Sequence[str] = ()) -> _core.SamplingParams:
        return _core.SamplingParams(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
            typical_p=self.typical_p, repeat_last_n=self.repeat_last_n, repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            penalize_newline=self.penalize_newline, mirostat=self.mirostat, mirostat_tau=self.mirostat_tau,
            mirostat_eta=self.mirostat_eta, seed=self.seed,
            logit_bias=[(int(k), float(v)) for k, v in (logit_bias or {}).items()], grammar=grammar,
            grammar_triggers=list(grammar_triggers))

    def generate_params(self, grammar: str = "", logit_bias: dict[int, float] | None = None, *,
                        logprobs: bool = False, top_logprobs: int = 0, shift: bool | None = None,
                        grammar_triggers: Sequence[str] = ()) -> _core.GenerateParams:
        """What the engine needs for one request with these options; ``shift`` None keeps the core's
        default. num_predict below 0 (-2, fill the context) is the core's -1; num_keep -1 keeps the
        whole context."""
        params = _core.GenerateParams(
            sampling=self.sampling_params(grammar, logit_bias, grammar_triggers),
            num_predict=self.num_predict if self.num_predict >= 0 else -1,
            num_keep=self.num_keep if self.num_keep >= 0 else self.load.num_ctx,
            stop=list(self.stop), logprobs=logprobs, top_logprobs=top_logprobs)
        if shift is not None:
            params.shift = shift
        return params


# What the server decides, not a request: a folder on the server's disk and its bound.
SERVER_ONLY = frozenset({"prompt_cache_dir", "prompt_cache_disk_mb"})
_LOAD_FIELDS = {f.name: f for f in fields(LoadOptions) if f.name not in SERVER_ONLY}
_REQUEST_FIELDS = {f.name: f for f in fields(Options) if f.name != "load"}


def _tensor_split(value: Any) -> tuple[float, ...]:
    """A proportion per GPU: a list of numbers, or llama.cpp's comma-separated form ("3,1"), which
    a Modelfile PARAMETER line gives; "" clears it."""
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = [part for item in items for part in (item.split(",") if isinstance(item, str) else [item])]
    return tuple(_coerce("tensor_split", float, p) for p in parts if not (isinstance(p, str) and not p.strip()))


def _check(options: Options) -> None:
    load = options.load
    rules = [
        (load.num_ctx > 0, "num_ctx", "must be positive"),
        (load.num_batch > 0, "num_batch", "must be positive"),
        (load.num_thread >= 0, "num_thread", "must not be negative"),
        (load.num_thread_batch >= 0, "num_thread_batch", "must not be negative"),
        (load.main_gpu >= -1, "main_gpu", "must be -1 (any GPU) or a device number"),
        (load.split_mode in SPLIT_MODES, "split_mode", f"must be one of {', '.join(SPLIT_MODES)}"),
        (all(x >= 0 for x in load.tensor_split) and (not load.tensor_split or any(load.tensor_split))
         and len(load.tensor_split) <= _core.max_devices(), "tensor_split",
         f"must be at most {_core.max_devices()} proportions, not negative and not all zero"),
        (load.num_parallel > 0, "num_parallel", "must be positive"),
        (load.stream_interval_ms >= 0, "stream_interval_ms", "must not be negative"),
        (load.kv_cache_type in KV_CACHE_TYPES, "kv_cache_type", f"must be one of {', '.join(KV_CACHE_TYPES)}"),
        (options.temperature >= 0, "temperature", "must not be negative"),
        (options.repeat_penalty > 0, "repeat_penalty", "must be greater than 0"),
        (options.repeat_last_n >= -1, "repeat_last_n", "must be -1 or more"),
        (0 <= options.top_p <= 1, "top_p", "must be between 0 and 1"),
        (0 <= options.min_p <= 1, "min_p", "must be between 0 and 1"),
        (options.typical_p >= 0, "typical_p", "must not be negative"),
        (options.mirostat in (0, 1, 2), "mirostat", "must be 0, 1 or 2"),
        (options.num_predict >= -2, "num_predict", "must be -2, -1 or more"),
        (options.num_keep >= -1, "num_keep", "must be -1 or more"),
    ]
    for ok, name, reason in rules:
        if not ok:
            value = getattr(load, name, None) if hasattr(load, name) else getattr(options, name)
            raise InvalidOptionError(f"invalid option {name}: {reason}, got {value!r}")


def defaults(config: Config | None = None) -> Options:
    config = config or get_config()
    load = LoadOptions(
        num_ctx=config.context_length,
        num_gpu=config.num_gpu,
        main_gpu=config.main_gpu,
        use_mlock=config.use_mlock,
        num_thread=config.num_thread,
        flash_attention=config.flash_attention,
        kv_cache_type=config.kv_cache_type,
        num_parallel=config.num_parallel,
        stream_interval_ms=config.stream_interval_ms,
        inference_nice=config.inference_nice,
        prompt_cache_mb=config.prompt_cache_mb,
        kv_unified=config.multiuser_cache,
        backend_sampling=config.backend_sampling,
    )
    return Options(load=load)


def parse_options(raw: dict[str, Any] | None, base: Options | None = None) -> Options:
    """Applies a request's (or a Modelfile's) options on top of ``base``; unknown keys are logged and ignored."""
    options = base or defaults()
    if not raw:
        _check(options)
        return options
    load_changes: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or name in IGNORED_OPTIONS:
            continue
        if name == "stop":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
                raise InvalidOptionError(f"invalid option stop: expected a list of strings, got {value!r}")
            changes["stop"] = tuple(value)
        elif name == "tensor_split":
            load_changes[name] = _tensor_split(value)
        elif name in _LOAD_FIELDS:
            load_changes[name] = _coerce(name, _LOAD_FIELDS[name].type, value)
        elif name in _REQUEST_FIELDS:
            changes[name] = _coerce(name, _REQUEST_FIELDS[name].type, value)
        else:
            log.warning("invalid option provided: %s", name)  # Ollama ignores unknown keys too
    if load_changes:
        changes["load"] = replace(options.load, **load_changes)
    options = replace(options, **changes)
    _check(options)
    return options


def replace_load(options: Options, **changes: Any) -> Options:
    """The same options with some load-time options changed."""
    return replace(options, load=replace(options.load, **changes))
