"""Issue 16 item 11: one bad model must not kill every model. `serve` runs each loaded model in a
worker process (engine/isolated.py); a crash there (a SIGBUS from a model file truncated under it,
an abort, a kill) ends that model's requests with a clear error, the server and the other models go
on, and the next request loads the model again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import ollama
import pytest
import requests

from a3s_power.config import Config
from a3s_power.engine.options import LoadOptions
from a3s_power.engine.runner import LoadedModel
from a3s_power.engine.scheduler import Scheduler
from a3s_power.errors import ModelLoadError
from a3s_power.store.types import LocalModel
from tests.serve_process import serve
from tests.tiny_models import write_tiny_llama

ENV = {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "512", "OLLAMA_KEEP_ALIVE": "-1"}


def _workers_of(pid: int) -> list[int]:
    """The model workers a server process started, oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"a3s_power.engine.worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _wait_for_new_worker(pid: int, known: set[int]) -> int:
    for _ in range(100):
        fresh = [w for w in _workers_of(pid) if w not in known]
        if fresh:
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError("no model worker started")


def _generate(url: str, model: str, **extra) -> requests.Response:
    body = {"model": model, "prompt": "hello", "stream": False,
            "options": {"num_predict": 4, "temperature": 0, **extra.pop("options", {})}, **extra}
    return requests.post(url + "/api/generate", json=body, timeout=120)


def _two_models(tmp_path: Path, url: str) -> dict[str, Path]:
    """Two tiny models of different weights in the server's store; their blobs' paths, by name."""
    client = ollama.Client(host=url)
    blobs = {}
    for seed, name in enumerate(("first", "second")):
        source = write_tiny_llama(tmp_path / f"{name}.gguf", seed=seed + 1)
        digest = client.create_blob(source)
        list(client.create(model=name, files={"m.gguf": digest}, stream=True))
        blobs[name] = tmp_path / "home" / "models" / "blobs" / digest.replace(":", "-")
        assert blobs[name].is_file()
    return blobs


def _assert_alive(server) -> None:
    assert server.proc.poll() is None, server.log_path.read_text()[-3000:]
    assert requests.get(server.url + "/api/version", timeout=10).ok


def test_a_model_file_truncated_under_a_loaded_model_fails_its_request_only(tmp_path):
    """The issue's case: the blob of a loaded model is truncated (SIGBUS in llama.cpp on the next
    read of its weights). That request gets a 500 naming the runner's end; the server lives; the
    other loaded model answers; with the file restored, the model loads again and answers."""
    with serve(tmp_path / "home", **ENV) as server:
        blobs = _two_models(tmp_path, server.url)
        assert _generate(server.url, "first").ok
        assert _generate(server.url, "second").ok
        original = blobs["first"].read_bytes()
        with open(blobs["first"], "r+b") as f:
            f.truncate(4096)  # the header stays; every weight is gone from under the mapping
        crashed = _generate(server.url, "first", options={"num_predict": 16})
        assert crashed.status_code == 500, crashed.text
        assert "llama runner process has terminated: signal: bus error" in crashed.json()["error"]
        _assert_alive(server)
        assert _generate(server.url, "second").ok
        # While the file stays truncated, loading it again is a clear load error, not a crash.
        assert _generate(server.url, "first").status_code == 500
        _assert_alive(server)
        blobs["first"].write_bytes(original)
        assert _generate(server.url, "first").ok
        assert _generate(server.url, "second").ok
    assert "llama runner process has terminated" in server.log  # the server says why in its log


def _stream_then_kill(server, model: str, sig: int) -> list[dict]:
    """Starts a long streamed generation, kills the model's worker with ``sig`` after its first
    lines, and returns every line the stream carried."""
    worker = _wait_for_new_worker(server.proc.pid, set())
    body = {"model": model, "prompt": "hello", "options": {"num_predict": 100000, "temperature": 0}}
    lines = []
    with requests.post(server.url + "/api/generate", json=body, stream=True, timeout=120) as r:
        assert r.ok
        for raw in r.iter_lines():
            lines.append(json.loads(raw))
            if len(lines) == 2:
                os.kill(worker, sig)
    return lines


@pytest.mark.parametrize("sig, words", [(signal.SIGKILL, "signal: killed"), (signal.SIGABRT, "signal: aborted")])
def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error(tmp_path, sig, words):
    """A worker killed mid-stream (SIGKILL), or aborting as llama.cpp does on a GGML_ASSERT
    (SIGABRT): the stream ends with an error line, the server lives, the next request reloads."""
    with serve(tmp_path / "home", **ENV) as server:
        _two_models(tmp_path, server.url)
        assert _generate(server.url, "first").ok
        lines = _stream_then_kill(server, "first", sig)
        assert "error" in lines[-1] and words in lines[-1]["error"], lines[-1]
        assert not lines[-1].get("done")
        _assert_alive(server)
        assert _workers_of(server.proc.pid) == []  # the dead worker was reaped
        assert _generate(server.url, "first").ok
        assert len(_workers_of(server.proc.pid)) == 1


def test_other_models_keep_streaming_while_one_crashes(tmp_path):
    """A stream of the other model, running when the first one's worker dies, finishes whole."""
    with serve(tmp_path / "home", **ENV) as server:
        _two_models(tmp_path, server.url)
        assert _generate(server.url, "first").ok
        first = _wait_for_new_worker(server.proc.pid, set())
        assert _generate(server.url, "second").ok
        body = {"model": "second", "prompt": "hello", "options": {"num_predict": 64, "temperature": 0}}
        with requests.post(server.url + "/api/generate", json=body, stream=True, timeout=120) as r:
            lines = []
            for raw in r.iter_lines():
                lines.append(json.loads(raw))
                if len(lines) == 1:
                    os.kill(first, signal.SIGKILL)
        assert lines[-1]["done"] and lines[-1]["eval_count"] == 64
        assert _generate(server.url, "first").ok


def test_a_worker_that_dies_loading_is_a_load_error(tmp_path, tiny_path):
    """A load that kills its worker fails that load with the runner's end, and leaves nothing
    loaded behind. (The worker is stopped as it starts, before it can have loaded anything.)"""
    spec = LocalModel(name="tiny:latest", model_path=Path(tiny_path), capabilities=["completion"])
    scheduler = Scheduler(Config.from_env(), lambda name: spec, isolate=True)

    async def main() -> None:
        load = asyncio.ensure_future(scheduler.load(spec, LoadOptions(num_ctx=256), None))
        worker = 0
        while not worker:
            await asyncio.sleep(0)  # let the load spawn it
            found = _workers_of(os.getpid())
            worker = found[0] if found else 0
        os.kill(worker, signal.SIGSTOP)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(ModelLoadError, match="llama runner process has terminated: signal: killed"):
            await asyncio.wait_for(load, 60)
        assert scheduler.running() == [] and scheduler._bases == {}
        runner = await scheduler.load(spec, LoadOptions(num_ctx=256), None)  # the next load works
        assert runner.model.worker.alive
        await scheduler.close()
        assert _workers_of(os.getpid()) == []

    asyncio.run(main())


def test_the_engine_from_python_stays_in_process(tiny_path):
    """Programs that build a scheduler themselves (or use LoadedModel) run models in their own
    process; only `serve` isolates them by default."""
    assert Config.from_env().model_workers
    spec = LocalModel(name="tiny:latest", model_path=Path(tiny_path), capabilities=["completion"])
    scheduler = Scheduler(Config.from_env(), lambda name: spec)

    async def main() -> None:
        runner = await scheduler.load(spec, LoadOptions(num_ctx=256), None)
        assert isinstance(runner.model, LoadedModel)
        assert _workers_of(os.getpid()) == []
        await scheduler.close()

    asyncio.run(main())


def test_a_model_file_deleted_under_a_loaded_model_is_a_clear_error_never_a_hang(tmp_path):
    """The blob removed from disk (not through the API) while its model is loaded: the model's next
    request is a prompt error naming it, never a hang; the other model is untouched."""
    with serve(tmp_path / "home", **ENV) as server:
        blobs = _two_models(tmp_path, server.url)
        assert _generate(server.url, "first").ok
        blobs["first"].unlink()
        started = time.monotonic()
        gone = _generate(server.url, "first")
        assert gone.status_code in (404, 500), gone.text
        assert time.monotonic() - started < 30
        assert "first" in gone.json()["error"]
        _assert_alive(server)
        assert _generate(server.url, "second").ok
