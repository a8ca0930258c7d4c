"""The commands' way to the server at OLLAMA_HOST: a client, the server started in the background when
none answers, and failures ended as Ollama's CLI ends them (one ``Error: ...`` line, exit status 1;
Ctrl-C quietly, exit status 130)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import click

from ..client import Client
from ..errors import A3SPowerError
from .format import ProgressPrinter


async def ensure_server(client: Client) -> None:
    """Starts ``a3s-power serve`` in the background when nothing answers at OLLAMA_HOST."""
    from ..config import get_config

    if await client.heartbeat():
        return
    log_dir = get_config().home
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "server.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
    for _ in range(200):
        await asyncio.sleep(0.1)
        if await client.heartbeat():
            return
    raise A3SPowerError(f"could not start the server; see {log_dir / 'server.log'}")


def new_client() -> Client:
    """A client of the server at OLLAMA_HOST with the first API key of A3S_POWER_API_KEY (or its
    file), trusting A3S_POWER_CA_FILE's CAs for HTTPS; signing its requests when OLLAMA_AUTH is set."""
    from ..config import get_config  # here, not above: --version answers without pydantic

    config = get_config()
    return Client(config.host, sign=config.auth, api_key=config.client_api_key(), ca_file=config.ca_file)


def with_server(work: Callable[[Client], Awaitable[None]]) -> None:
    """Runs a command's ``work`` with a client of the server, started first if none answers; ends the
    process as Ollama's CLI does when it fails."""
    async def main() -> None:
        async with new_client() as client:
            await ensure_server(client)
            await work(client)

    try:
        asyncio.run(main())
    except A3SPowerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        click.echo(f"Error: {connection_error(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def connection_error(exc: BaseException) -> str:
    """What Ollama's CLI says when the connection to the server fails or breaks off."""
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return "unexpected EOF"  # the server went away in the middle of an answer
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (f"the server's certificate at {exc.host}:{exc.port} is not trusted ({exc.certificate_error}); "
                "A3S_POWER_CA_FILE names the CA that signed it")
    if isinstance(exc, aiohttp.ClientConnectorSSLError):  # a server that speaks no TLS at an https:// host, say
        return f"TLS with the server at {exc.host}:{exc.port} failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to the server at {exc.host}:{exc.port}, is it running?"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the server"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def quietly_on_interrupt(work: Callable[[], Any]) -> Any:
    """Runs local work (reading, hashing files) so that Ctrl-C ends the command as Ollama's does:
    no traceback and no "Aborted!", exit status 130."""
    try:
        return work()
    except KeyboardInterrupt:
        sys.exit(130)


async def stream_progress(client: Client, path: str, body: dict) -> None:
    """A pull, push or create, its progress stream printed as it comes."""
    printer = ProgressPrinter()
    try:
        async for item in client.stream("POST", path, body):
            printer.update(item)
    finally:
        printer.finish()
