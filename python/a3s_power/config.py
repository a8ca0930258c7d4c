"""Settings read once at start-up: config.toml under $A3S_POWER_HOME, then the environment (Ollama's
variables where Ollama has one) on top of it.

Every setting is declared once, below, as a field of ``Config`` with its ``Setting`` (settings.py):
its type, default, environment variable, config.toml key, range and meaning. The reading of both
sources, ``a3s-power serve --help`` and README's table (``python -m a3s_power.config --markdown``)
come from those declarations. Every other module asks ``get_config()`` rather than reading
os.environ itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .errors import InvalidOptionError
from .settings import Setting, collect, env_text, markdown, parse_bool, parse_seconds, read_env, read_toml, spliced
from .timefmt import parse_go_duration, parse_keep_alive

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _number_or_text(value: str | int | float) -> str | float:
    """Seconds written as text ("30", "-1") as a number; a duration ("5m") or a number as it is."""
    if isinstance(value, str) and value.lstrip("-").replace(".", "", 1).isdigit():
        return float(value)
    return value


def _seconds(value: str | int | float) -> float:
    """Seconds, or a Go duration ("5m"): OLLAMA_LOAD_TIMEOUT."""
    value = _number_or_text(value)
    return parse_go_duration(value) if isinstance(value, str) else float(value)


def _keep_alive(value: str | int | float) -> float:
    """Seconds, or a Go duration; negative is forever."""
    seconds = parse_keep_alive(_number_or_text(value))
    assert seconds is not None
    return seconds


def _positive_seconds(text: str) -> float:
    seconds = parse_seconds(text)
    if not seconds > 0:
        raise ValueError(f"{seconds:g} is not more than 0 seconds")
    return seconds


def _debug_level(text: str) -> int:
    """OLLAMA_DEBUG: ``2`` is more than ``1``; any other true value is 1."""
    if text == "2":
        return 2
    return 1 if parse_bool(text) else 0


def _keys(values: Iterable[str]) -> tuple[str, ...]:
    """API keys as sent in a header: visible ASCII, no spaces. The error never shows a key."""
    keys = tuple(values)
    for number, key in enumerate(keys, 1):
        if not key or not all("!" <= c <= "~" for c in key):
            raise ValueError(f"key {number} holds a character other than visible ASCII (letters, digits, "
                             "punctuation)")
    return keys


class _Price(BaseModel, extra="forbid"):
    input: float = 0.0
    output: float = 0.0


_BENCH = "(benchmarks/README.md)"


class Config(BaseModel):
    """Every setting: a field, annotated with how it is read and what it means (``settings.Setting``)."""

    # Where things are.
    home: Annotated[Path, Setting(
        "where A3S Power keeps its files", env="A3S_POWER_HOME", shown="`~/.a3s/power`")]
    host: Annotated[str, Setting(
        "where the server listens and the CLI connects", env="OLLAMA_HOST", toml=True,
        more="in config.toml, `host` and `port`")] = "127.0.0.1:11434"
    models_dir: Annotated[Path | None, Setting(
        "the model store", env="OLLAMA_MODELS", toml=True, shown="`$A3S_POWER_HOME/models`")] = None
    tmpdir: Annotated[Path | None, Setting(
        "where temporary files go", env="OLLAMA_TMPDIR", shown="the system's")] = None

    # Loaded models.
    keep_alive: Annotated[float, Setting(
        "how long an idle model stays loaded", env="OLLAMA_KEEP_ALIVE", toml=True, shown="`5m`",
        more="a duration (`5m`, `1h30m`) or seconds; `0` unloads at once, negative never",
        parse=str, clean=_keep_alive, toml_type=str | int | float)] = 300.0
    load_timeout: Annotated[float, Setting(
        "how long a model load may stall before it fails", env="OLLAMA_LOAD_TIMEOUT", shown="`5m`",
        more="a duration or seconds; `0` or negative waits forever", parse=_seconds)] = 300.0
    max_loaded_models: Annotated[int, Setting(
        "models loaded at once", env="OLLAMA_MAX_LOADED_MODELS", toml=True, ge=0, env_ge=1,
        more="the least recently used idle model makes room for another; `0` in config.toml: no limit")] = 3
    max_queue: Annotated[int, Setting(
        "requests that may wait for a slot", env="OLLAMA_MAX_QUEUE", toml=True, ge=0, env_ge=1,
        more="more are answered 503")] = 512
    num_parallel: Annotated[int, Setting(
        "slots per loaded model", env="OLLAMA_NUM_PARALLEL", toml=True, ge=1)] = 4
    context_length: Annotated[int, Setting(
        "default `num_ctx`", env="OLLAMA_CONTEXT_LENGTH", toml=True, ge=1)] = 4096
    flash_attention: Annotated[bool | None, Setting(
        "flash attention: `1` on, `0` off", env="OLLAMA_FLASH_ATTENTION", toml=True, shown="auto",
        more="unset lets llama.cpp use it wherever the device supports it (the CPU included), as Ollama does; "
             f"on the CPU it speeds up prefill and short contexts but slows decode in long ones {_BENCH}")] = None
    kv_cache_type: Annotated[str, Setting(
        "KV cache type: f16, q8_0, q4_0", env="OLLAMA_KV_CACHE_TYPE", toml=True, clean=str.lower)] = "f16"
    num_gpu: Annotated[int, Setting(
        "layers to offload to GPUs", env="OLLAMA_NUM_GPU", toml="gpu.gpu_layers",
        more="`-1` all, `0` none (the CPU only)")] = -1
    main_gpu: Annotated[int, Setting(
        "the GPU every model goes to", toml="gpu.main_gpu",
        more="`-1`: the scheduler places each model by free memory")] = -1
    gpu_overhead: Annotated[int, Setting(
        "bytes kept free on each GPU", env="OLLAMA_GPU_OVERHEAD", ge=0)] = 0
    sched_spread: Annotated[bool, Setting(
        "spread every model over every GPU", env="OLLAMA_SCHED_SPREAD",
        more="by default a model goes to the one GPU with the most room, and over several only when it fits "
             "none alone")] = False
    use_mlock: Annotated[bool, Setting(
        "lock models' weights in memory", toml=True)] = False
    num_thread: Annotated[int, Setting(
        "inference threads", toml=True, ge=0,
        more="`0`: one per core the server may run on")] = 0
    multiuser_cache: Annotated[bool, Setting(
        "one KV buffer shared by every slot", env="OLLAMA_MULTIUSER_CACHE",
        more="a prompt prefix common to many users is shared without copies; by default each slot has a buffer "
             "of its own, so a slot's attention never spans other slots' cached conversations")] = False
    prompt_cache_mb: Annotated[int, Setting(
        "host memory per loaded model, in MiB, for conversations pushed out of their slot",
        env="A3S_POWER_PROMPT_CACHE_MB", toml=True, ge=0,
        more="their next turn is restored from it instead of evaluated again; an upper bound, filled only while "
             "the machine keeps 512 MiB free, and emptied before a model is evicted to make room for another "
             "(`power_prompt_cache_bytes` in `/metrics`); `0` keeps none")] = 1024
    prompt_cache_disk_mb: Annotated[int, Setting(
        "disk, in MiB, for conversations that leave the prompt cache's host memory",
        env="A3S_POWER_PROMPT_CACHE_DISK_MB", toml=True, ge=0,
        more="under the store (`<models>/cache/prompts/`, a folder per model and KV layout); each loaded model "
             "writes there what its memory lets go and what its slots hold when it is unloaded or the server "
             "stops, so a conversation's next turn is restored after a restart or a model swap instead of "
             "evaluated again; the least recently used go first, and a model's folder goes with the model. "
             "`0` keeps none on disk")] = 4096
    backend_sampling: Annotated[bool, Setting(
        "pick tokens inside the decode graph", env="A3S_POWER_BACKEND_SAMPLING", toml=True,
        more="llama.cpp's backend sampling, for requests whose options allow it (greedy, or top_k/top_p/min_p and "
             "temperature, with a logit bias; no grammar, penalties or logprobs): the logits stay on the device. "
             f"Off by default: with llama.cpp 0c1e570 it made every step slower on an H200 {_BENCH}")] = False
    stream_interval_ms: Annotated[int, Setting(
        "least milliseconds between two deliveries of a fast stream's tokens to Python",
        env="A3S_POWER_STREAM_INTERVAL_MS", toml=True, ge=0,
        more="the first token and the end are never held. Each delivery wakes the server and its client, which "
             f"costs decode speed on a machine whose cores all decode {_BENCH}")] = 40
    inference_nice: Annotated[int, Setting(
        "how much lower than the server's own threads the inference threads run (Linux)",
        env="A3S_POWER_INFERENCE_NICE", toml=True, ge=0, le=19,
        more="they also ask the kernel for long scheduler slices, so that a woken API thread preempts them at "
             "once: the API answers promptly while every core decodes, at no measured cost in decode speed "
             f"{_BENCH}, though decoding yields the CPU to other busy programs on the machine. `0`: the server's "
             "own priority and slices")] = 10
    model_workers: Annotated[bool, Setting(
        "`serve` runs each loaded model in a worker process of its own", env="A3S_POWER_MODEL_WORKERS", toml=True,
        more="as Ollama runs a runner per model: a crash in llama.cpp (a model file truncated under a loaded "
             "model, an abort on a malformed GGUF) ends that model's requests with an error, and the next request "
             "loads it again; the server and other models go on. `0`: every model in the server's process. "
             "Programs that use the engine from Python run it in their own process")] = True

    # The HTTP server.
    origins: Annotated[tuple[str, ...], Setting(
        "extra CORS origins", env="OLLAMA_ORIGINS", toml=True, toml_type=list[str], clean=tuple,
        more="comma-separated in the variable, a list in config.toml")] = ()
    max_body_mb: Annotated[int, Setting(
        "the largest JSON request body, in MiB", env="A3S_POWER_MAX_BODY_MB", toml=True, ge=1,
        more="larger ones are answered 413 before they are read, and JSON nested more than 100 levels deep "
             "400, in each API's error shape; blob uploads (`POST /api/blobs`) stream to disk and are exempt")] = 100
    header_timeout_s: Annotated[float, Setting(
        "seconds a connection may take to send a request's line and headers", env="A3S_POWER_HEADER_TIMEOUT",
        toml=True, gt=0, parse=_positive_seconds,
        more="from when it opens or from the end of its previous response; a client that stalls there is "
             "dropped. Bodies being read and answers being streamed are not bounded by it")] = 60.0
    allow_private_image_urls: Annotated[bool, Setting(
        "let image URLs reach loopback, private, link-local and cloud-metadata addresses",
        env="A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS", toml=True,
        more="by default they are refused, after DNS resolution and on every redirect, so that a request cannot "
             "make the server reach services on its own host or network")] = False

    # Access and TLS (README's "API keys and TLS").
    api_keys: Annotated[tuple[str, ...], Setting(
        "API keys: when any is set, every route but `/` needs one", env="A3S_POWER_API_KEY", toml=True,
        toml_type=list[str], clean=_keys, shown="none",
        more="comma-separated in the variable, a list in config.toml; sent as `Authorization: Bearer KEY` (or "
             "`x-api-key: KEY` on the Anthropic routes); a missing or wrong key is answered 401 in the API's "
             "error shape. The CLI sends the first key of this variable (or of `api_key_file`)"),
        Field(repr=False)] = ()
    api_key_file: Annotated[Path | None, Setting(
        "a file of API keys, one a line, with `api_keys`", env="A3S_POWER_API_KEY_FILE", toml=True,
        more="blank lines and lines that start with `#` are skipped; read at start-up")] = None
    tls_cert: Annotated[Path | None, Setting(
        "the server's certificate chain (PEM): `serve` answers HTTPS", env="A3S_POWER_TLS_CERT", toml=True,
        more="with `tls_key`; also `serve --tls-cert`")] = None
    tls_key: Annotated[Path | None, Setting(
        "the private key (PEM) of `tls_cert`", env="A3S_POWER_TLS_KEY", toml=True,
        more="also `serve --tls-key`")] = None
    ca_file: Annotated[Path | None, Setting(
        "CA certificates (PEM) the CLI trusts for an `https://` OLLAMA_HOST", env="A3S_POWER_CA_FILE", toml=True,
        more="instead of the system's")] = None

    # The store, remote models and ollama.com.
    noprune: Annotated[bool, Setting(
        "keep unreferenced blobs", env="OLLAMA_NOPRUNE",
        more="at start-up and on a pull over an older version")] = False
    remotes: Annotated[tuple[str, ...], Setting(
        "hosts remote models may use (comma-separated)", env="OLLAMA_REMOTES")] = ("ollama.com",)
    no_cloud: Annotated[bool, Setting(
        "no cloud models, web search or web fetch", env="OLLAMA_NO_CLOUD",
        more='also `{"disable_ollama_cloud": true}` in `~/.ollama/server.json`')] = False
    cloud_url: Annotated[str, Setting(
        "the account API behind `/api/me`, `/api/signout` and the sign-in link", env="A3S_POWER_CLOUD_URL",
        clean=lambda url: url.rstrip("/"),
        more="a mirror or a test server may stand in; calls to it are signed with the machine's key")] = \
        "https://ollama.com"

    # The CLI.
    auth: Annotated[bool, Setting(
        "the CLI signs each request to the server with the machine's key", env="OLLAMA_AUTH",
        more="a `ts` query and an `Authorization` header, as Ollama's client does")] = False
    nohistory: Annotated[bool, Setting(
        "the interactive CLI keeps no history", env="OLLAMA_NOHISTORY")] = False
    debug: Annotated[int, Setting(
        "`1` logs debug output, llama.cpp's included", env="OLLAMA_DEBUG", parse=_debug_level,
        more="`2` more of llama.cpp's")] = 0

    # Accounting.
    pricing: Annotated[dict[str, dict[str, float]], Setting(
        "dollars per million input and output tokens, for `/v1/usage` and `power_cost_dollars`",
        toml=True, toml_type=dict[str, _Price], shown="free",
        more='`[pricing.default]` and `[pricing."<model>"]` tables of `input` and `output`')] = {}

    @classmethod
    def from_env(cls) -> Config:
        """config.toml under $A3S_POWER_HOME, then the environment on top of it."""
        home = Path(env_text("A3S_POWER_HOME") or Path.home() / ".a3s" / "power")
        values: dict[str, Any] = {**_read_toml(home / "config.toml"), **read_env(SETTINGS)}
        return cls(**{**values, "home": home})

    def api_key_list(self) -> tuple[str, ...]:
        """Every API key: ``api_keys`` and the lines of ``api_key_file``; none means no key is asked for."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidOptionError(f"A3S_POWER_API_KEY_FILE {self.api_key_file}: cannot read it: "
                                         f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
            lines = [line.strip() for line in text.splitlines()]
            try:
                found = _keys(line for line in lines if line and not line.startswith("#"))
            except ValueError as exc:
                raise InvalidOptionError(f"A3S_POWER_API_KEY_FILE {self.api_key_file}: {exc}") from None
            if not found:  # a key file that holds none must not leave the server open
                raise InvalidOptionError(f"A3S_POWER_API_KEY_FILE {self.api_key_file}: no key in it")
            keys += found
        return tuple(keys)

    def client_api_key(self) -> str | None:
        """The key the CLI and ``client.Client`` send: the first one."""
        keys = self.api_key_list()
        return keys[0] if keys else None

    @property
    def models_root(self) -> Path:
        return self.models_dir or self.home / "models"

    def price(self, model: str) -> tuple[float, float]:
        """Dollars per million input and output tokens for a model."""
        entry = self.pricing.get(model) or self.pricing.get(model.split(":")[0]) or self.pricing.get("default") or {}
        return float(entry.get("input", 0.0)), float(entry.get("output", 0.0))


# Settings that are no field of Config: two keys of config.toml that make up other settings, and a
# variable that the C++ core reads.
SETTINGS: tuple[Setting, ...] = collect(Config, [
    Setting("the port the server listens on, with `host`", toml="port", type=int, shown="`11434`", after="host"),
    Setting("a folder whose `models` folder is the model store", toml="data_dir", type=Path, after="models_dir",
            more="`models_dir` wins"),
    Setting("`0`: the sampler ranks the whole vocabulary at every token, not a shortlist",
            env="A3S_POWER_SAMPLER_SHORTLIST", type=bool, shown="`1`", after="inference_nice",
            more="the shortlist holds the best logits and every token that logit bias or penalties touch, and "
                 "makes the same pick several times faster; for checking and benchmarks (read by the C++ core)"),
])


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidOptionError(f"{path}: {exc}") from None
    values = read_toml(SETTINGS, data, str(path))
    # host and port make one setting; data_dir names the folder above models_dir.
    host, port = values.pop("host", None), values.pop("port", None)
    if host is not None or port is not None:
        values["host"] = f"{host or '127.0.0.1'}:{port or 11434}"
    data_dir = values.pop("data_dir", None)
    if data_dir is not None and "models_dir" not in values:
        values["models_dir"] = data_dir / "models"
    return values


@lru_cache(maxsize=1)
def get_config() -> Config:
    return Config.from_env()


def main(argv: list[str] | None = None) -> None:
    """``python -m a3s_power.config --markdown``: README's table of settings."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m a3s_power.config", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print README's table of settings")
    parser.add_argument("--update", metavar="README", help="write the table into this file, between its markers")
    args = parser.parse_args(argv)
    if args.update:
        readme = Path(args.update)
        readme.write_text(spliced(readme.read_text(encoding="utf-8"), markdown(SETTINGS)), encoding="utf-8")
    elif args.markdown:
        sys.stdout.write(markdown(SETTINGS))
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
