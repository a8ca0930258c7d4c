"""The real server as users start it, `python -m a3s_power serve` in a process of its own (the import
order, the signal handling and the memory of a real process), on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_bytes(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status (``VmRSS``, ``VmHWM``) in bytes; 0 when absent."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class ServeProcess:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.log = ""  # the server's output, once it has stopped


@contextmanager
def serve(home: Path, **env: str) -> Iterator[ServeProcess]:
    """A server over the store in ``home`` with ``env`` added to the environment, up and answering
    when this yields; stopped with SIGTERM afterwards (killed if it does not stop within 60 s), its
    output then in ``.log``."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_HOST": f"127.0.0.1:{port}", **env}
    log_path = home / "server.log"
    with open(log_path, "w") as log:  # a file: a pipe nobody reads would block the server
        proc = subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    server = ServeProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        for _ in range(300):
            try:
                if requests.get(server.url + "/api/version", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited at start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.log = log_path.read_text(errors="replace")
