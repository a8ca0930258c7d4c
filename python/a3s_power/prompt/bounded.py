"""Prompt work that cannot hold the server: templates are programs, and a model file or a request
can carry one that loops for a very long time (``{{range 10000}}{{range 4000}}…``, or a Jinja
``range(n)`` with n from the message).

Each piece of such work runs on a thread of its own, never on the event loop and never in the
shared worker pool, and is stopped where it stands when it runs past its time or its request is
cancelled (the client went away): the thread gets an exception at its next Python instruction
(CPython's PyThreadState_SetAsyncExc). Rendering is pure Python, so it always reaches one; the
C calls in it (tokenizing, string joins) end on their own.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .chat_template import TemplateError

T = TypeVar("T")

# Rendering a real template takes milliseconds; tokenizing what it made, under a second even for
# a context of 128k tokens. Past this, a render is a runaway.
RENDER_TIMEOUT_S = 30.0


class _Stopped(BaseException):
    """Raised inside a runaway render's thread to end it (BaseException: no template catches it)."""


def _interrupt(thread: threading.Thread) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped))


async def run_bounded(fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
    """``fn(*args)`` on a thread of its own; a TemplateError when it runs longer than ``timeout``
    (RENDER_TIMEOUT_S by default), and stopped at once when the awaiting task is cancelled."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    lock = threading.Lock()
    state = {"done": False, "stopped": False}

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        value: T | BaseException
        try:
            try:
                ok, value = True, fn(*args)
            except _Stopped:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                ok, value = False, exc
            with lock:
                state["done"] = True
                if state["stopped"]:
                    return
            loop.call_soon_threadsafe(deliver, ok, value)
        except _Stopped:
            pass  # stopped just as it finished: nobody waits for it any more

    thread = threading.Thread(target=target, name="a3s-render", daemon=True)
    thread.start()

    def stop() -> None:
        with lock:
            if not state["done"]:
                state["stopped"] = True
                _interrupt(thread)

    try:
        return await asyncio.wait_for(asyncio.shield(future), RENDER_TIMEOUT_S if timeout is None else timeout)
    except asyncio.TimeoutError:
        stop()
        raise TemplateError(f"the prompt template took longer than {timeout or RENDER_TIMEOUT_S:g}s to render "
                            "and was stopped") from None
    except asyncio.CancelledError:
        stop()
        raise
