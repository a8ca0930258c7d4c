"""Settings read once from the environment (Ollama's variables) at start-up.

The TOML file under $A3S_POWER_HOME and CLI overrides build on this; every other module asks
``get_config()`` rather than reading os.environ itself.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

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


def _env_float(name: str) -> float | None:
    value = _env(name)
    if value is None:
        return None
    try:
        return float(value.removesuffix("s"))
    except ValueError:
        raise InvalidOptionError(f"environment variable {name}: {value!r} is not a number of seconds") from None


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
    flash_attention: bool | None = None  # None: llama.cpp decides (on where the device supports it), as Ollama
    kv_cache_type: str = "f16"
    debug: int = 0
    keep_alive: float = 300.0  # seconds; negative = forever
    max_loaded_models: int = 3
    max_queue: int = 512
    origins: tuple[str, ...] = ()
    # Image URLs (OpenAI image_url, Anthropic url sources) may point at loopback, private, link-local
    # and other non-public addresses (A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS); off, the server refuses to
    # fetch them, so a request cannot make it reach services on its own host or network.
    allow_private_image_urls: bool = False
    models_dir: Path | None = None
    noprune: bool = False  # OLLAMA_NOPRUNE: keep unreferenced blobs (at start-up and on re-pull)
    # Least time between two deliveries of a stream's tokens to Python (see ContextParams): 25
    # frames a second. Each delivery wakes the server and its client, and on a machine whose
    # cores all decode that costs decode speed (25 ms: 3-5 % slower in paired runs on two cores).
    stream_interval_ms: int = 40
    # How much lower the inference threads run than the server's own (ContextParams.nice), so the
    # API answers at once while a decode takes every core; they also take long scheduler slices.
    # On two cores: /api/version p99 under 8 streams 3-4 ms instead of 8, at no measured cost in
    # decode speed (benchmarks/README.md). 0: the server's own priority and slices.
    inference_nice: int = 10
    # Host memory per loaded model for conversations pushed out of their slot: their next turn is
    # restored from it instead of evaluated again (ContextParams.prompt_cache_mb). 0 keeps none.
    prompt_cache_mb: int = 1024
    # The largest JSON request body, in MiB (A3S_POWER_MAX_BODY_MB): room for long prompts and base64
    # images; larger ones are answered 413. Blob uploads (POST /api/blobs) stream to disk, unbounded.
    max_body_mb: int = 100
    # How long a connection may take to send a request's line and headers, from when it opens or
    # from the end of its previous response (A3S_POWER_HEADER_TIMEOUT, seconds): a client that sends
    # half a request and stalls is dropped then. No request in progress is bounded by it: a body
    # being read and a response being streamed take as long as they take.
    header_timeout_s: float = 60.0

    load_timeout: float = 300.0  # OLLAMA_LOAD_TIMEOUT seconds; 0 or negative waits forever
    gpu_overhead: int = 0  # OLLAMA_GPU_OVERHEAD bytes kept free on each GPU
    sched_spread: bool = False  # OLLAMA_SCHED_SPREAD: spread a model over every GPU
    tmpdir: Path | None = None  # OLLAMA_TMPDIR: where temporary files go
    # OLLAMA_MULTIUSER_CACHE: one KV buffer for every slot, so many users of one prompt prefix share
    # its cells without copies; by default each slot has its own buffer and attends to it alone.
    multiuser_cache: bool = False
    remotes: tuple[str, ...] = ("ollama.com",)  # OLLAMA_REMOTES: hosts allowed for remote models
    nohistory: bool = False  # OLLAMA_NOHISTORY: the interactive CLI keeps no history
    # The ollama.com account API that /api/me, /api/signout and the signin link speak to (a mirror
    # or a test server may stand in: A3S_POWER_CLOUD_URL); calls to it are signed with the key.
    cloud_url: str = "https://ollama.com"
    auth: bool = False  # OLLAMA_AUTH: the CLI signs its requests to the server, as Ollama's client does
    no_cloud: bool = False  # OLLAMA_NO_CLOUD: no cloud models, web search or fetch (see cloud.py)
    # Load-time defaults that config.toml's [gpu] table and OLLAMA_NUM_GPU set.
    num_gpu: int = -1
    main_gpu: int = -1  # -1: the scheduler places each model; a device number pins models to that GPU
    use_mlock: bool = False
    num_thread: int = 0
    # What a million tokens cost, for /v1/usage and the cost metric: {"default": {...}, "<model>": {...}}
    # with "input" and "output" prices in dollars. Local inference is free unless configured.
    pricing: dict[str, dict[str, float]] = {}

    @classmethod
    def from_env(cls) -> "Config":
        """config.toml under $A3S_POWER_HOME, then the environment on top of it."""
        home = Path(_env("A3S_POWER_HOME") or Path.home() / ".a3s" / "power")
        values: dict = {"home": home, **_read_toml(home / "config.toml")}
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
        if (v := _env_int("A3S_POWER_INFERENCE_NICE")) is not None and 0 <= v <= 19:
            values["inference_nice"] = v
        if (v := _env_int("A3S_POWER_PROMPT_CACHE_MB")) is not None and v >= 0:
            values["prompt_cache_mb"] = v
        if (v := _env_int("A3S_POWER_MAX_BODY_MB")) is not None and v > 0:
            values["max_body_mb"] = v
        if (v := _env_float("A3S_POWER_HEADER_TIMEOUT")) is not None:
            if not v > 0:
                raise InvalidOptionError(f"environment variable A3S_POWER_HEADER_TIMEOUT: {v:g} is not more than 0 "
                                         "seconds")
            values["header_timeout_s"] = v
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
        if (v := _env_bool("A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS")) is not None:
            values["allow_private_image_urls"] = v
        if (v := _env("OLLAMA_MODELS")) is not None:
            values["models_dir"] = Path(v).expanduser()
        if (v := _env_bool("OLLAMA_NOPRUNE")) is not None:
            values["noprune"] = v
        if (v := _env_int("OLLAMA_NUM_GPU")) is not None:
            values["num_gpu"] = v
        if (v := _env("OLLAMA_LOAD_TIMEOUT")) is not None:
            from .timefmt import parse_go_duration

            try:
                values["load_timeout"] = float(v) if v.replace(".", "", 1).lstrip("-").isdigit() else parse_go_duration(v)
            except ValueError as exc:
                raise InvalidOptionError(f"environment variable OLLAMA_LOAD_TIMEOUT: {exc}") from None
        if (v := _env_int("OLLAMA_GPU_OVERHEAD")) is not None and v >= 0:
            values["gpu_overhead"] = v
        if (v := _env_bool("OLLAMA_SCHED_SPREAD")) is not None:
            values["sched_spread"] = v
        if (v := _env("OLLAMA_TMPDIR")) is not None:
            values["tmpdir"] = Path(v).expanduser()
        if (v := _env_bool("OLLAMA_MULTIUSER_CACHE")) is not None:
            values["multiuser_cache"] = v
        if (v := _env("OLLAMA_REMOTES")) is not None:
            values["remotes"] = tuple(h.strip() for h in v.split(",") if h.strip())
        if (v := _env_bool("OLLAMA_NOHISTORY")) is not None:
            values["nohistory"] = v
        if (v := _env("A3S_POWER_CLOUD_URL")) is not None:
            values["cloud_url"] = v.rstrip("/")
        if (v := _env_bool("OLLAMA_AUTH")) is not None:
            values["auth"] = v
        if (v := _env_bool("OLLAMA_NO_CLOUD")) is not None:
            values["no_cloud"] = v
        if (v := _env("OLLAMA_DEBUG")) is not None:
            values["debug"] = 2 if v == "2" else (1 if _env_bool("OLLAMA_DEBUG") else 0)
        return cls(**values)


    @property
    def models_root(self) -> Path:
        return self.models_dir or self.home / "models"


    def price(self, model: str) -> tuple[float, float]:
        """Dollars per million input and output tokens for a model."""
        entry = self.pricing.get(model) or self.pricing.get(model.split(":")[0]) or self.pricing.get("default") or {}
        return float(entry.get("input", 0.0)), float(entry.get("output", 0.0))


class _Gpu(BaseModel, extra="forbid"):
    gpu_layers: int = -1
    main_gpu: int | None = None


class _Price(BaseModel, extra="forbid"):
    input: float = 0.0
    output: float = 0.0


class _TomlFile(BaseModel, extra="forbid"):
    """config.toml as the spec defines it; unknown keys are errors that name the key."""

    host: str | None = None
    port: int | None = None
    data_dir: Path | None = None
    models_dir: Path | None = None
    max_loaded_models: int | None = None
    keep_alive: str | int | float | None = None
    num_parallel: int | None = None
    context_length: int | None = None
    flash_attention: bool | None = None
    kv_cache_type: str | None = None
    use_mlock: bool | None = None
    num_thread: int | None = None
    max_queue: int | None = None
    origins: list[str] | None = None
    allow_private_image_urls: bool | None = None
    stream_interval_ms: int | None = None
    inference_nice: int | None = Field(default=None, ge=0, le=19)
    prompt_cache_mb: int | None = Field(default=None, ge=0)
    max_body_mb: int | None = Field(default=None, ge=1)
    header_timeout_s: float | None = Field(default=None, gt=0)
    gpu: _Gpu | None = None
    pricing: dict[str, _Price] | None = None


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, before it joined the standard library
        import tomli as tomllib

    from pydantic import ValidationError

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = _TomlFile.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidOptionError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidOptionError(f"{path}: {problems}") from None
    values: dict = {}
    if parsed.host is not None or parsed.port is not None:
        values["host"] = f"{parsed.host or '127.0.0.1'}:{parsed.port or 11434}"
    if parsed.data_dir is not None:
        values["models_dir"] = parsed.data_dir.expanduser() / "models"
    if parsed.models_dir is not None:
        values["models_dir"] = parsed.models_dir.expanduser()
    for key in ("max_loaded_models", "num_parallel", "context_length", "flash_attention", "kv_cache_type",
                "use_mlock", "num_thread", "max_queue", "stream_interval_ms",
                "inference_nice", "prompt_cache_mb", "max_body_mb", "header_timeout_s"):
        if getattr(parsed, key) is not None:
            values[key] = getattr(parsed, key)
    if parsed.origins is not None:
        values["origins"] = tuple(parsed.origins)
    if parsed.allow_private_image_urls is not None:
        values["allow_private_image_urls"] = parsed.allow_private_image_urls
    if parsed.keep_alive is not None:
        from .engine.scheduler import parse_keep_alive

        try:
            values["keep_alive"] = parse_keep_alive(parsed.keep_alive)
        except ValueError as exc:
            raise InvalidOptionError(f"{path}: keep_alive: {exc}") from None
    if parsed.gpu is not None:
        values["num_gpu"] = parsed.gpu.gpu_layers
        if parsed.gpu.main_gpu is not None:
            values["main_gpu"] = parsed.gpu.main_gpu
    if parsed.pricing is not None:
        values["pricing"] = {k: v.model_dump() for k, v in parsed.pricing.items()}
    return values


@lru_cache(maxsize=1)
def get_config() -> Config:
    return Config.from_env()
