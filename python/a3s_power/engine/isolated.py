"""Models in worker processes the server supervises, as Ollama runs each model in a runner process:
a crash in llama.cpp (a SIGBUS from a model file truncated under it, a GGML_ASSERT's abort on a
malformed GGUF) ends that model's worker and its requests, with a clear error, and the server and
every other model go on. The scheduler drops the dead model's runners; the next request loads it
again.

``ModelWorker`` is one process (engine/worker.py) holding one model's weights; ``WorkerModel`` is
an engine in it, with LoadedModel's interface, so the scheduler and the service use either alike.
Text and tokens never cross: a vocabulary-only copy of the model, loaded here once the worker has
loaded the file, serves tokenize, detokenize, the chat template and the metadata.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from ..core import _core
from ..errors import InferenceError, ModelLoadError
from . import wire
from .options import LoadOptions, Options
from .runner import Chunk, Inbox, Vocabulary, chunk_of

log = logging.getLogger(__name__)

# The package's root on sys.path, for the worker's interpreter whatever the server's environment.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class ModelWorker:
    """One worker process and the model it loaded."""

    def __init__(self, name: str, proc: subprocess.Popen, stream: socket.socket, control: socket.socket) -> None:
        self.name = name
        self._proc = proc
        self._control = control
        self._control_lock = threading.Lock()
        self._stream = stream
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[int, tuple[asyncio.Future, type[Exception]]] = {}
        self._inboxes: dict[int, Inbox] = {}
        self._ids = itertools.count(1)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._closing = False
        self._eof = False
        self.exit_message: str | None = None  # why the process ended, once it has
        self.on_exit: list[Callable[["ModelWorker"], None]] = []  # hear of an end the server did not ask for
        self.model: WorkerWeights | None = None

    # --- start ----------------------------------------------------------------------------

    @classmethod
    async def start(cls, name: str, path: str, placed: LoadOptions, log_level: int | None = None) -> "ModelWorker":
        """A worker with ``path`` loaded with ``placed``; ModelLoadError where the load fails or
        the process dies loading it."""
        worker = await asyncio.to_thread(cls._spawn, name)
        await worker._connect()
        try:
            info = await worker._call("load", path, placed, log_level, error=ModelLoadError)
            vocab_params = _core.ModelParams()
            vocab_params.vocab_only = True
            vocab_params.n_gpu_layers = 0
            vocab = await asyncio.to_thread(_core.Model, path, vocab_params)
        except BaseException:
            worker.close()
            raise
        worker.model = WorkerWeights(vocab, info["size"], info["n_params"])
        return worker

    @classmethod
    def _spawn(cls, name: str) -> "ModelWorker":
        stream, stream_child = socket.socketpair()
        control, control_child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "a3s_power.engine.worker", str(stream_child.fileno()),
                 str(control_child.fileno())],
                pass_fds=(stream_child.fileno(), control_child.fileno()), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            stream_child.close()
            control_child.close()
        worker = cls(name, proc, stream, control)
        threading.Thread(target=worker._relay_stderr, name=f"worker-stderr-{proc.pid}", daemon=True).start()
        return worker

    async def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        reader, self._writer = await asyncio.open_connection(sock=self._stream)
        self._reader_task = self._loop.create_task(self._read(reader))

    def _relay_stderr(self) -> None:
        """The worker's stderr (llama.cpp's log) goes on to the server's; its last lines say why it
        ended when it crashes (a GGML_ASSERT's message, say)."""
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace")
            self._stderr_tail.append(line.rstrip())
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """False as soon as the process has ended, before this server has heard of it on its
        connection (a request arriving then loads the model again rather than fail)."""
        if self.exit_message is not None or self._eof:
            return False
        if not hasattr(os, "waitid"):  # macOS before Python 3.13
            return self._proc.poll() is None
        try:  # looked at without reaping it, and without Popen's lock, which _reap may hold
            return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped already
            return False

    # --- the stream -----------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await wire.read(reader)
                if message[0] == "events":
                    for event in message[1]:
                        inbox = self._inboxes.get(event.id)
                        if inbox is not None:
                            inbox.events.append(event)
                            if inbox.waiter is not None and not inbox.waiter.done():
                                inbox.waiter.set_result(None)
                else:  # ("reply", call, ok, value)
                    _, call, ok, value = message
                    future, _ = self._calls.pop(call, (None, None))
                    if future is not None and not future.done():
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value)
        except wire.Closed:
            self._eof = True
        await asyncio.to_thread(self._reap)
        self._ended()

    async def _call(self, op: str, *args: Any, error: type[Exception] = InferenceError) -> Any:
        """An operation on the stream, answered in order with what the worker returned or raised;
        ``error`` with why the worker ended, where it ends first."""
        if self.exit_message is not None:
            raise error(self.exit_message)
        call = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._calls[call] = (future, error)
        self._write((op, call, *args))
        return await future

    def _write(self, message: tuple) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.frame(message))

    def send_soon(self, message: tuple) -> None:
        """From any thread (a finalizer)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._write, message)

    def new_request(self) -> tuple[int, Inbox]:
        request = next(self._ids)
        inbox = self._inboxes[request] = Inbox()
        return request, inbox

    def end_request(self, request: int, cancel: bool) -> None:
        self._inboxes.pop(request, None)
        if cancel:
            self._write(("cancel", request))

    # --- the control socket -----------------------------------------------------------------

    def control(self, method: str, *args: Any) -> Any:
        """A synchronous call, from any thread (the event loop's included: the worker answers it
        from a thread of its own, never waiting on this process)."""
        with self._control_lock:
            if self.exit_message is not None:
                raise InferenceError(self.exit_message)
            try:
                wire.send(self._control, (method, args))
                ok, value = wire.receive(self._control)
            except (wire.Closed, OSError):
                self._reap()
                raise InferenceError(self._describe_exit()) from None
        if not ok:
            raise value
        return value

    # --- the end ------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Waits for the process to end (it has closed its sockets, so it is ending); kills it if it
        lingers."""
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _describe_exit(self) -> str:
        """Ollama's words for a runner that died: its exit status or signal, and the last error
        line it printed, if any."""
        code = self._proc.returncode
        if code is None:
            status = "the process closed its connection"
        elif code < 0:
            try:
                status = "signal: " + (signal.strsignal(-code) or f"{-code}").lower()
            except ValueError:
                status = f"signal: {-code}"
        else:
            status = f"exit status {code}"
        message = f"llama runner process has terminated: {status}"
        errors = [line for line in self._stderr_tail if _is_error_line(line)]
        return message + (f": {errors[-1].strip()}" if errors else "")

    def _ended(self) -> None:
        """The process is gone: every call and request in flight ends with why."""
        if self.exit_message is None:
            self.exit_message = self._describe_exit()
        unexpected = not self._closing
        if unexpected:
            log.error("model %s (worker %d): %s", self.name, self._proc.pid, self.exit_message)
        for future, error in self._calls.values():
            if not future.done():
                future.set_exception(error(self.exit_message))
        self._calls.clear()
        for request, inbox in self._inboxes.items():
            inbox.events.append(wire.Event(request, done=True, done_reason="error", error=self.exit_message))
            if inbox.waiter is not None and not inbox.waiter.done():
                inbox.waiter.set_result(None)
        self._control.close()
        if unexpected:
            for hear in list(self.on_exit):
                hear(self)

    def close(self) -> None:
        """Ends the worker: it exits when its stream closes, which frees the weights and device
        memory at once. Returns once the process is gone."""
        if self._closing:
            return
        self._closing = True
        try:  # at once, not when the event loop next runs (this may be the loop's thread, waiting below)
            self._stream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already: the worker ended
        if self._writer is not None:
            self._writer.close()
        else:
            self._stream.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader_task is None:  # never connected: nothing else will see it end
            self.exit_message = self.exit_message or self._describe_exit()
            self._control.close()

    # --- engines ------------------------------------------------------------------------------

    async def open(self, path: str, placed: LoadOptions, adapters: Sequence[tuple[str, float]] = (),
                   projector: str | None = None) -> "WorkerModel":
        """An engine over this worker's weights (LoadedModel's arguments)."""
        eid = next(self._ids)
        info = await self._call("open", eid, path, placed, list(adapters), projector, error=ModelLoadError)
        return WorkerModel(self, eid, path, placed, info)


def _is_error_line(line: str) -> bool:
    lowered = line.lower()
    return any(mark in lowered for mark in ("error", "ggml_assert", "assert", "terminate called", "abort"))


class WorkerWeights:
    """A worker's model as the server sees it: metadata and vocabulary from a vocabulary-only copy
    loaded here (_core.Model's attributes), sizes as the worker loaded the weights."""

    def __init__(self, vocab: _core.Model, size: int, n_params: int) -> None:
        self._vocab = vocab
        self.size = size
        self.n_params = n_params

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vocab, name)


class WorkerModel(Vocabulary):
    """An engine in a worker process, with LoadedModel's interface."""

    def __init__(self, worker: ModelWorker, eid: int, path: str, load: LoadOptions, info: dict) -> None:
        assert worker.model is not None
        self.worker = worker
        self._eid = eid
        self.path = path
        self.load_options = load
        self.model = worker.model  # type: ignore[assignment]  # _core.Model's surface
        self.engine = _EngineStats(self)
        self._image_marker: str | None = info["image_marker"]
        self.load_duration_ns = 0
        self._closed = False

    @property
    def image_marker(self) -> str | None:
        return self._image_marker

    def tokenize_multimodal(self, prompt: str, images: Sequence[bytes]) -> "WorkerMultimodalPrompt":
        """The worker's projector makes the prompt (the images stay there until it runs)."""
        handle, tokens, n_images, image_tokens = self.worker.control("tokenize_multimodal", self._eid, prompt,
                                                                    list(images))
        return WorkerMultimodalPrompt(self.worker, handle, tokens, n_images, image_tokens)

    async def generate(self, tokens: Sequence[int] | "WorkerMultimodalPrompt", options: Options, *,
                       grammar: str = "", logit_bias: dict[int, float] | None = None, logprobs: bool = False,
                       top_logprobs: int = 0, shift: bool | None = None,
                       grammar_triggers: Sequence[str] = ()) -> AsyncIterator[Chunk]:
        self._check_open()
        kwargs = {"grammar": grammar, "logit_bias": logit_bias, "logprobs": logprobs, "top_logprobs": top_logprobs,
                  "shift": shift, "grammar_triggers": list(grammar_triggers)}
        prompt = tokens.handle if isinstance(tokens, WorkerMultimodalPrompt) else list(tokens)
        request, inbox = self.worker.new_request()
        finished = False
        try:
            await self.worker._call("submit", self._eid, request, prompt, options, kwargs)
            while True:
                event = await inbox.get()
                finished = event.done
                chunk = chunk_of(event)
                yield chunk
                if finished:
                    return
        finally:
            self.worker.end_request(request, cancel=not finished)

    async def embed(self, inputs: Iterable[Sequence[int]], normalize: bool = True) -> list[list[float]]:
        self._check_open()
        token_lists = [list(tokens) for tokens in inputs]
        requests = [self.worker.new_request() for _ in token_lists]
        ended = set()
        try:
            await self.worker._call("embed", self._eid, [r for r, _ in requests], token_lists, normalize)
            results = []
            for request, inbox in requests:
                event = await inbox.get()
                ended.add(request)
                if event.done_reason == "error":
                    raise InferenceError(event.error)
                results.append(event.embedding)
            return results
        finally:
            for request, _ in requests:
                self.worker.end_request(request, cancel=request not in ended)

    def release_prompt_cache(self) -> int:
        if self._closed or not self.worker.alive:
            return 0
        try:
            return self.worker.control("release_prompt_cache", self._eid)
        except InferenceError:  # it ended meanwhile: it holds nothing now
            return 0

    def _check_open(self) -> None:
        if self._closed:
            raise InferenceError(f"model {self.path} has been unloaded")
        if self.worker.exit_message is not None:
            raise InferenceError(self.worker.exit_message)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.worker.alive:
            try:
                self.worker.control("close", self._eid)
            except InferenceError:
                pass  # it ended meanwhile, and its engines with it

    def __enter__(self) -> "WorkerModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _EngineStats:
    """``engine.stats()`` of a worker's engine, as /metrics reads it."""

    def __init__(self, model: WorkerModel) -> None:
        self._model = model
        self._last: dict[str, int] = {}

    def stats(self) -> dict[str, int]:
        """Read from the worker; for one that has ended (until the scheduler lets it go), its last
        counters with nothing busy, queued or cached, which is what it holds now."""
        try:
            self._last = self._model.worker.control("stats", self._model._eid)
        except InferenceError:
            if not self._last:
                raise
            self._last = {**self._last, "slots_busy": 0, "queued": 0, "prompt_cache_bytes": 0}
        return self._last

    def slots(self) -> list[dict[str, int | bool]]:
        """``engine.slots()`` of a worker's engine; none for one that has ended."""
        try:
            return self._model.worker.control("slots", self._model._eid)
        except InferenceError:
            return []


class WorkerMultimodalPrompt:
    """An image prompt made in a worker (_core.MultimodalPrompt's surface); the worker keeps the
    images until it is submitted, or until this is dropped unsubmitted."""

    def __init__(self, worker: ModelWorker, handle: int, tokens: list[int], n_images: int,
                 image_tokens: list[int]) -> None:
        self.handle = handle
        self.tokens = tokens
        self.n_images = n_images
        self.image_tokens = image_tokens
        weakref.finalize(self, worker.send_soon, ("forget", handle))
