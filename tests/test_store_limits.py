"""Limits (issue 16, item 14): names too long for the store's file system, a create --quantize that
is killed, fails or is cancelled, the CLI on Ctrl-C and on a lost connection, and clients that
send half a request and stall."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from a3s_power.errors import InvalidOptionError, ModelLoadError
from a3s_power.registry import TransferSettings
from a3s_power.store import ModelStore, create as create_module
from a3s_power.store.create import CreateError, import_gguf, prepare_create, run_create
from a3s_power.store.names import ModelName
from a3s_power.store.types import InvalidModelName
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
PYTHON_DIR = ROOT / "python"


def create(store: ModelStore, body: dict) -> list[dict]:
    async def run():
        return [line async for line in run_create(store, prepare_create(store, body))]

    return asyncio.run(run())


def http(url: str, method: str, path: str, body=None) -> tuple[int, bytes]:
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.request(method, url + path, json=body) as r:
                return r.status, await r.read()

    return asyncio.run(go())


def temporaries(store: ModelStore) -> list[str]:
    return [p.name for p in store.blobs.dir.iterdir() if p.name.startswith(".tmp-")] \
        if store.blobs.dir.is_dir() else []


# --- names ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_path):
    with ServerThread(tmp_path_factory.mktemp("home"), TransferSettings(max_retries=0, backoff_s=0.01)) as srv:
        create(srv.store, {"model": "base", "files": {"t.gguf": import_gguf(srv.store, Path(tiny_path))}})
        yield srv


def test_name_parts_must_fit_a_file_name():
    ModelName.parse("a" * 251 + ".com/library/x")  # 255 characters: a folder name the store can hold
    for name in ("a" * 252 + ".com/library/x", "a" * 296 + ".com/library/x:latest", "a" * 400 + ".com/x/y",
                 "library/" + "m" * 81, "x:" + "t" * 81, "n" * 81 + "/m"):
        with pytest.raises(InvalidModelName):
            ModelName.parse(name)


def test_a_300_character_host_is_an_invalid_name_not_a_500(server):
    long = "a" * 296 + ".com/library/x:latest"  # a 300-character host
    root = str(server.store.root)
    answers = {
        "show": http(server.url, "POST", "/api/show", {"model": long}),
        "pull": http(server.url, "POST", "/api/pull", {"model": long, "stream": False}),
        "push": http(server.url, "POST", "/api/push", {"model": long, "stream": False}),
        "delete": http(server.url, "DELETE", "/api/delete", {"model": long}),
        "create": http(server.url, "POST", "/api/create", {"model": long, "from": "base", "stream": False}),
        "create from": http(server.url, "POST", "/api/create", {"model": "y", "from": long, "stream": False}),
        "copy to": http(server.url, "POST", "/api/copy", {"source": "base", "destination": long}),
        "copy from": http(server.url, "POST", "/api/copy", {"source": long, "destination": "z"}),
    }
    for what, (status, raw) in answers.items():
        assert status == 400, (what, status, raw)
        error = json.loads(raw)["error"]
        assert root not in error and "manifests" not in error and "/tmp" not in error, (what, error)
    for what in ("show", "pull", "push", "delete", "create"):
        assert json.loads(answers[what][1])["error"] == "invalid model name", what
    assert json.loads(answers["copy to"][1])["error"] == f'destination "{long}" is invalid'
    assert json.loads(answers["copy from"][1])["error"] == f'source "{long}" is invalid'

    status, raw = http(server.url, "GET", "/api/tags")
    assert status == 200 and [m["name"] for m in json.loads(raw)["models"]] == ["base:latest"]


def test_the_longest_host_works_end_to_end(server):
    name = "a" * 251 + ".com/library/x:latest"
    assert http(server.url, "POST", "/api/show", {"model": name})[0] == 404
    assert http(server.url, "POST", "/api/copy", {"source": "base", "destination": name})[0] == 200
    status, raw = http(server.url, "POST", "/api/show", {"model": name})
    assert status == 200
    assert http(server.url, "DELETE", "/api/delete", {"model": name})[0] == 200
    assert http(server.url, "DELETE", "/api/delete", {"model": name})[0] == 404


# --- create --quantize: killed, failing, cancelled ---------------------------------------------


def test_a_killed_quantize_leaves_no_temporary_after_restart(tmp_path, tiny_path):
    """The process doing a create --quantize is killed while it writes the quantized file: the next
    start removes the temporary at once (it is no longer locked), not an hour later."""
    store = ModelStore(tmp_path / "models")
    digest = import_gguf(store, Path(tiny_path))
    code = f"""
        import asyncio, sys, threading
        from a3s_power.store import ModelStore, create as create_module
        from a3s_power.store.create import prepare_create, run_create

        async def stuck_quantize(src, dst, qtype, estimate, *, interval_s=0.25):
            with open(dst, "wb") as f:
                f.write(b"half a quantized model")
            print("writing", flush=True)
            yield 1, estimate
            await asyncio.Event().wait()  # the C++ call, still working when the process dies

        create_module.quantize = stuck_quantize
        store = ModelStore({str(store.root)!r})
        async def main():
            plan = prepare_create(store, {{"model": "q", "files": {{"t.gguf": {digest!r}}}, "quantize": "q8_0"}})
            async for line in run_create(store, plan):
                pass
        asyncio.run(main())
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PYTHON_DIR)})
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        assert len(temporaries(store)) == 1
        store.startup()  # another server on the same store: the temporary is in use, it stays
        assert len(temporaries(store)) == 1
    finally:
        proc.kill()
        proc.wait()
    assert len(temporaries(store)) == 1
    ModelStore(store.root).startup()  # the restart, with the default grace period of an hour
    assert temporaries(store) == []
    assert store.find("q") is None and store.blobs.exists(digest)


def test_a_failing_quantize_removes_its_temporary_and_shows_no_path(tmp_path, tiny_path, monkeypatch):
    store = ModelStore(tmp_path / "models")
    digest = import_gguf(store, Path(tiny_path))

    async def failing_quantize(src, dst, qtype, estimate, *, interval_s=0.25):
        with open(dst, "wb") as f:
            f.write(b"some bytes")
        yield 1, estimate
        raise ModelLoadError(f"failed to quantize {src}: llama_model_quantize: cannot write {dst}")

    monkeypatch.setattr(create_module, "quantize", failing_quantize)
    with pytest.raises(CreateError) as failure:
        create(store, {"model": "q", "files": {"t.gguf": digest}, "quantize": "q8_0"})
    assert failure.value.status == 500
    assert str(store.root) not in str(failure.value) and "quantization failed" in str(failure.value)
    assert temporaries(store) == [] and store.find("q") is None


def test_a_cancelled_quantize_removes_its_temporary(tmp_path, tiny_path, monkeypatch):
    store = ModelStore(tmp_path / "models")
    digest = import_gguf(store, Path(tiny_path))
    writing = asyncio.Event()

    async def slow_quantize(src, dst, qtype, estimate, *, interval_s=0.25):
        with open(dst, "wb") as f:
            f.write(b"part of it")
        writing.set()
        yield 1, estimate
        await asyncio.Event().wait()

    monkeypatch.setattr(create_module, "quantize", slow_quantize)

    async def main():
        plan = prepare_create(store, {"model": "q", "files": {"t.gguf": digest}, "quantize": "q8_0"})

        async def consume():
            async for _ in run_create(store, plan):
                pass

        task = asyncio.ensure_future(consume())
        await writing.wait()
        assert len(temporaries(store)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert temporaries(store) == [] and store.find("q") is None


# --- the CLI: a lost connection, Ctrl-C ---------------------------------------------------------


class FakeServer:
    """Answers the heartbeat, and /api/create with one progress line, then ``mode``: "die" (the
    connection breaks off, as when the server is killed) or "stall"."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def create(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"status":"quantizing F32 model to Q4_0"}\n')
        if self.mode == "die":
            request.transport.abort()
            return response
        await self._stop.wait()
        return response

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(20)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/", self.heartbeat)
        app.router.add_post("/api/create", self.create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


def cli(tmp_path: Path, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR), "OLLAMA_HOST": f"127.0.0.1:{port}",
           "A3S_POWER_HOME": str(tmp_path / "home")}
    return subprocess.Popen([sys.executable, "-m", "a3s_power", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_says_error_when_the_server_dies_mid_create(tmp_path):
    (tmp_path / "Modelfile").write_text("FROM base\n")
    with FakeServer("die") as srv:
        proc = cli(tmp_path, srv.port, "create", "q", "-q", "q4_0")
        out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == "Error: unexpected EOF"


def test_cli_ctrl_c_mid_create_exits_quietly(tmp_path):
    (tmp_path / "Modelfile").write_text("FROM base\n")
    with FakeServer("stall") as srv:
        proc = cli(tmp_path, srv.port, "create", "q", "-q", "q4_0")
        lines = []
        for line in proc.stderr:  # the progress line arrives: the CLI is waiting on the stream
            lines.append(line)
            if "quantizing" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err and "Error" not in err, err


def test_cli_ctrl_c_while_reading_the_modelfile_exits_quietly(tmp_path):
    """Ctrl-C while the CLI reads local files (a Modelfile, a big GGUF to hash) before it talks to
    the server: no traceback, no click "Aborted!", exit status 130."""
    fifo = tmp_path / "Modelfile"
    os.mkfifo(fifo)
    proc = cli(tmp_path, 9, "create", "q", "-f", str(fifo))  # the server is never reached
    deadline = time.monotonic() + 60
    writer = None
    while writer is None:  # opening the write end succeeds once the CLI has the FIFO open to read
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.02)
    try:
        proc.send_signal(signal.SIGINT)  # it is blocked reading the Modelfile
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130, err
    assert err == "" and out == "", err


# --- the header timeout -----------------------------------------------------------------------


class TimedServer(ServerThread):
    """The test server on the runner ``serve`` makes (with its header timeout)."""

    def make_runner(self, app: web.Application) -> web.AppRunner:
        from a3s_power.server.serve import make_runner

        return make_runner(app, self.config)


def test_header_timeout_setting(monkeypatch, tmp_path):
    from a3s_power.config import Config

    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.delenv("A3S_POWER_HEADER_TIMEOUT", raising=False)
    assert Config.from_env().header_timeout_s == 60.0
    monkeypatch.setenv("A3S_POWER_HEADER_TIMEOUT", "2.5")
    assert Config.from_env().header_timeout_s == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("A3S_POWER_HEADER_TIMEOUT", bad)
        with pytest.raises(InvalidOptionError):
            Config.from_env()
    monkeypatch.delenv("A3S_POWER_HEADER_TIMEOUT")
    (tmp_path / "config.toml").write_text("header_timeout_s = 7\n")
    assert Config.from_env().header_timeout_s == 7


def closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``sock`` (reads EOF); fails if it keeps it past ``limit_s``."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept a stalled connection for more than {limit_s}s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_a_stalled_request_is_dropped_but_slow_work_is_not(tmp_path, monkeypatch):
    timeout = 0.5
    data = write_tiny_llama(tmp_path / "t.gguf", seed=3).read_bytes()
    settings = TransferSettings(progress_interval_s=0.0, backoff_s=0.01)
    with TimedServer(tmp_path / "home", settings, header_timeout_s=timeout) as srv, FakeRegistry() as reg:
        # Half a request line, then nothing: dropped after the header timeout.
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /api/ta")
            assert timeout * 0.8 <= closed_after(sock, 20) < 20
        # A connection that sends nothing at all, and one that stalls in its headers.
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            assert closed_after(sock, 20) < 20
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert closed_after(sock, 20) < 20
        # After a complete answer, the connection stays usable for the next request meanwhile.
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"200 OK" in sock.recv(65536)
            sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert b"200 OK" in sock.recv(65536)

        # A streamed answer much longer than the timeout (a throttled pull) is not cut.
        reg.add_model("library/slow", "1", [("application/vnd.ollama.image.model", data)])
        reg.faults.throttle_bps = max(1, int(len(data) / (6 * timeout)))  # about 6 timeouts long
        started = time.monotonic()
        status, raw = http(srv.url, "POST", "/api/pull", {"model": f"{reg.host}/library/slow:1", "insecure": True})
        lines = [json.loads(line) for line in raw.splitlines()]
        assert status == 200 and lines[-1] == {"status": "success"}, lines[-3:]
        assert time.monotonic() - started > 3 * timeout

        # A request body sent slowly (headers complete) is read to its end.
        body = json.dumps({"model": "slow-copy"}).encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
            for i in range(0, len(body), max(1, len(body) // 4)):
                sock.sendall(body[i:i + max(1, len(body) // 4)])
                time.sleep(timeout / 2)  # the slow client itself, not a synchronisation
            answer = b""
            sock.settimeout(20)
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]  # an answer, not a dropped connection
