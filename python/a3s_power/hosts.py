"""OLLAMA_HOST, read once, the way Ollama's envconfig.Host reads it: the server listens on it and
every client (the CLI, the in-process client) connects to it.

Rules: no scheme means http and port 11434; ``http://`` without a port means 80 and ``https://``
443; ``ollama.com`` alone means https on 443; a host without a port keeps the default; a bad
port falls back to the default; anything after the first ``/`` is a path prefix.

:func:`remote_url` is the other host this package names: a remote model's, as Ollama stores it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORT = 11434


@dataclass(frozen=True)
class Host:
    scheme: str
    host: str  # a name or an IP address, without brackets
    port: int
    path: str = ""  # "" or "/prefix"

    def url(self, *, for_client: bool = False) -> str:
        """``scheme://host:port/path``; ``for_client`` connects to this machine where the
        server listens on every address (no host, 0.0.0.0, ::), as Go's dialer does."""
        host = self.host
        if for_client and host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_host(value: str) -> Host:
    s = value.strip().strip("\"'").strip()  # as Ollama's envconfig.Var trims a variable
    default_port = DEFAULT_PORT
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
        if s == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, _, path = hostport.partition("/")
    host, port_text = _split_host_port(hostport)
    if host is None:  # no port given: the whole is a host (or nothing)
        host, port_text = "127.0.0.1", str(default_port)
        bare = hostport.strip("[]")
        if _is_ip(bare):
            host = str(ipaddress.ip_address(bare))
        elif hostport:
            host = hostport
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        port = default_port
    return Host(scheme, host, port, "/" + path.rstrip("/") if path.rstrip("/") else "")


def _split_host_port(hostport: str) -> tuple[str | None, str]:
    """Go's net.SplitHostPort: ``host:port`` or ``[v6]:port``; (None, "") without a port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1:].startswith(":"):
            return None, ""
        return hostport[1:end], hostport[end + 2:]
    if hostport.count(":") != 1:
        return None, ""
    host, port = hostport.split(":")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def remote_url(host: str) -> str:
    """``scheme://host:port`` as Ollama stores it (https and port 443 when left out)."""
    parts = urlsplit(host if "://" in host else "https://" + host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad remote host {host!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{hostname}:{port}"
