"""A model's worker process: one model's weights and the engines over them (a generation engine,
an embedding engine, models that add LoRA adapters to the same weights), run for the server by
engine/isolated.py, so that a crash in llama.cpp (a truncated file's SIGBUS, a GGML_ASSERT's abort)
ends this process and the requests of this model only.

    python -m a3s_power.engine.worker STREAM_FD CONTROL_FD

Two sockets to the server. The stream carries loads, submissions and cancellations one way and the
engines' events the other: every event ready at one wakeup, of every engine, goes in one frame.
The control socket answers the calls the server makes synchronously (stats, image prompts,
releasing the prompt cache, closing an engine) from a thread of its own, in order.
"""

from __future__ import annotations

# llama.cpp before anything else that may bring a C++ runtime (issue 14, _libs.py).
from ..core import _core  # isort: skip

import asyncio
import itertools
import os
import signal
import socket
import sys
import threading
from typing import Any

from . import wire
from .options import LoadOptions
from .runner import LoadedModel


class Worker:
    def __init__(self, stream: socket.socket, control: socket.socket) -> None:
        self._stream = stream
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._writer: asyncio.StreamWriter | None = None
        self.base: _core.Model | None = None
        self.engines: dict[int, LoadedModel] = {}
        # Which server request each engine request is, both ways: (engine, engine's id) <-> server's.
        self._to_server: dict[tuple[int, int], int] = {}
        self._to_engine: dict[int, tuple[int, int]] = {}
        self._outgoing: list[wire.Event] = []
        self._flush_due = False
        self._multimodal: dict[int, _core.MultimodalPrompt] = {}  # image prompts made, not yet submitted
        self._handles = itertools.count(1)

    async def run(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._stream)
        threading.Thread(target=self._serve_control, name="control", daemon=True).start()
        while True:
            try:
                message = await wire.read(reader)
            except wire.Closed:
                _exit()  # the server is gone or unloads the model
            self._on_message(message)

    # --- the stream ----------------------------------------------------------------------

    def _send(self, message: Any) -> None:
        assert self._writer is not None
        self._writer.write(wire.frame(message))

    def _on_message(self, message: tuple) -> None:
        op = message[0]
        if op == "cancel":
            where = self._to_engine.get(message[1])
            if where is not None and where[0] in self.engines:
                self.engines[where[0]].engine.cancel(where[1])
        elif op == "forget":
            self._multimodal.pop(message[1], None)
        else:
            call, args = message[1], message[2:]
            try:
                handler = getattr(self, "_op_" + op)
            except AttributeError:
                self._send(("reply", call, False, RuntimeError(f"unknown operation {op!r}")))
                return
            if op in ("load", "open"):  # slow: off the loop, which keeps serving the other engines
                task = self._loop.create_task(asyncio.to_thread(handler, *args))
                task.add_done_callback(lambda done: self._reply(call, done))
            else:
                try:
                    self._send(("reply", call, True, handler(*args)))
                except BaseException as exc:  # noqa: BLE001 - the server raises it as the in-process engine would
                    self._send(("reply", call, False, _portable(exc)))

    def _reply(self, call: int, done: asyncio.Future) -> None:
        exc = done.exception()
        if exc is not None:
            self._send(("reply", call, False, _portable(exc)))
            return
        result = done.result()
        if isinstance(result, tuple) and result and result[0] == "opened":
            _, eid, info = result
            engine = self.engines[eid].engine
            self._loop.add_reader(engine.notify_fd, self._on_ready, eid)
            result = info
        self._send(("reply", call, True, result))

    def _op_load(self, path: str, placed: LoadOptions, log_level: int | None) -> dict:
        if log_level is not None:
            _core.set_log_level(log_level)
        self.base = _core.Model(path, placed.model_params())
        return {"size": self.base.size, "n_params": self.base.n_params}

    def _op_open(self, eid: int, path: str, placed: LoadOptions, adapters: list[tuple[str, float]],
                 projector: str | None) -> tuple:
        model = LoadedModel(path, placed, adapters, self.base, projector)
        self.engines[eid] = model
        return "opened", eid, {"image_marker": model.image_marker}

    def _op_submit(self, eid: int, request: int, prompt: list[int] | int, options, kwargs: dict) -> None:
        engine = self.engines[eid].engine
        params = options.generate_params(**kwargs)
        if isinstance(prompt, int):  # an image prompt made by tokenize_multimodal
            prepared = self._multimodal.pop(prompt, None)
            if prepared is None:
                raise RuntimeError("the image prompt was released before it was submitted")
            self._route(eid, engine.submit_multimodal(prepared, params), request)
        else:
            self._route(eid, engine.submit(prompt, params), request)

    def _op_embed(self, eid: int, requests: list[int], inputs: list[list[int]], normalize: bool) -> None:
        engine = self.engines[eid].engine
        for request, tokens in zip(requests, inputs):
            self._route(eid, engine.submit_embedding(tokens, normalize), request)

    def _route(self, eid: int, engine_id: int, request: int) -> None:
        self._to_server[(eid, engine_id)] = request
        self._to_engine[request] = (eid, engine_id)

    def _on_ready(self, eid: int) -> None:
        model = self.engines.get(eid)
        if model is None:
            return
        for event in model.engine.drain(0):
            request = self._to_server.get((eid, event.id))
            if request is None:
                continue
            if event.done:
                del self._to_server[(eid, event.id)]
                self._to_engine.pop(request, None)
            self._outgoing.append(wire.plain_event(event, request))
        if self._outgoing and not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything drained in this turn of the loop, from every engine, in one frame."""
        self._flush_due = False
        if self._outgoing:
            events, self._outgoing = self._outgoing, []
            self._send(("events", events))

    def _closed(self, eid: int) -> None:
        """After an engine closed: its last events (every unfinished request ends with "cancel")
        go out, then it is forgotten."""
        model = self.engines.get(eid)
        if model is None:
            return
        self._on_ready(eid)
        self._loop.remove_reader(model.engine.notify_fd)
        del self.engines[eid]
        for key in [k for k in self._to_server if k[0] == eid]:
            self._to_engine.pop(self._to_server.pop(key), None)

    # --- the control socket ----------------------------------------------------------------

    def _serve_control(self) -> None:
        while True:
            try:
                method, args = wire.receive(self._control)
            except (wire.Closed, OSError):
                return
            try:
                reply = (True, getattr(self, "_call_" + method)(*args))
            except BaseException as exc:  # noqa: BLE001 - raised again in the server
                reply = (False, _portable(exc))
            try:
                wire.send(self._control, reply)
            except OSError:
                return

    def _call_stats(self, eid: int) -> dict[str, int]:
        return self.engines[eid].engine.stats()

    def _call_slots(self, eid: int) -> list[dict[str, int | bool]]:
        model = self.engines.get(eid)
        return model.engine.slots() if model is not None else []

    def _call_release_prompt_cache(self, eid: int) -> int:
        model = self.engines.get(eid)
        return model.release_prompt_cache() if model is not None else 0

    def _call_tokenize_multimodal(self, eid: int, prompt: str, images: list[bytes]) -> tuple:
        prepared = self.engines[eid].tokenize_multimodal(prompt, images)
        handle = next(self._handles)
        self._multimodal[handle] = prepared
        return handle, list(prepared.tokens), prepared.n_images, list(prepared.image_tokens)

    def _call_close(self, eid: int) -> None:
        model = self.engines.get(eid)
        if model is None:
            return
        model.engine.close()  # its requests end; the loop sends their last events
        done = threading.Event()

        def closed() -> None:
            try:
                self._closed(eid)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(closed)
        done.wait()
        model.close()


def _portable(exc: BaseException) -> BaseException:
    """The exception itself where it survives pickling (the package's errors, the built-in ones),
    else a RuntimeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")


async def _main(stream_fd: int, control_fd: int) -> None:
    stream = socket.socket(fileno=stream_fd)
    control = socket.socket(fileno=control_fd)
    await Worker(stream, control).run()


def _exit() -> None:
    """Nothing is kept after the server lets go: exiting without tearing down frees the weights and
    device memory at once, and never waits on an engine thread or a load in progress."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str]) -> None:
    # The server decides when this ends (it closes the stream): Ctrl-C in its terminal reaches the
    # whole process group, and the server finishes its streams before it lets its workers go.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_main(int(argv[0]), int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
