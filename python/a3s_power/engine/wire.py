"""What crosses between the server and a model's worker process (engine/worker.py,
engine/isolated.py): length-prefixed frames of pickled plain data, and the engine's events as plain
data.

Both ends are this package, started by the server itself, so pickle is safe here: nothing else
can write to these sockets (a socketpair, inherited by the worker alone).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

_LENGTH = struct.Struct("!I")


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def send(sock: socket.socket, message: Any) -> None:
    """One frame on a blocking socket."""
    sock.sendall(frame(message))


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    parts = []
    while n:
        part = sock.recv(min(n, 1 << 20))
        if not part:
            return None
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


class Closed(Exception):
    """The other end is gone."""


def receive(sock: socket.socket) -> Any:
    """One frame from a blocking socket; ``Closed`` at its end."""
    header = _read_exactly(sock, _LENGTH.size)
    body = _read_exactly(sock, _LENGTH.unpack(header)[0]) if header is not None else None
    if body is None:
        raise Closed()
    return pickle.loads(body)


async def read(reader: asyncio.StreamReader) -> Any:
    """One frame from an asyncio stream; ``Closed`` at its end."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(header)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        raise Closed() from None


# --- the engine's events as plain data (the fields of _core.Event that the server reads) ---------

class TokenChoice(NamedTuple):
    token: int
    logprob: float


class TokenLogprob(NamedTuple):
    token: int
    logprob: float
    top: list[TokenChoice]


@dataclass
class Event:
    id: int
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    embedding: list[float] = field(default_factory=list)
    done: bool = False
    done_reason: str = ""
    stop_sequence: str = ""
    error: str = ""
    timings: dict[str, int] = field(default_factory=dict)


def plain_event(event: Any, request: int) -> Event:
    """A _core.Event as plain data, under the server's request number."""
    return Event(request, event.text, list(event.tokens),
                 [TokenLogprob(e.token, e.logprob, [TokenChoice(c.token, c.logprob) for c in e.top])
                  for e in event.logprobs],
                 list(event.embedding), event.done, event.done_reason, event.stop_sequence, event.error,
                 event.timings if event.done else {})
