"""This machine's identity towards ollama.com and the registries that ask for it: an ed25519 key
pair in OpenSSH format at ``~/.ollama/id_ed25519``, the file Ollama uses, so that a machine already
connected to an ollama.com account through Ollama is connected for us too, and the other way round.

A signature travels as ``<public key, base64>:<signature, base64>`` in the Authorization header:
- over ``METHOD,PATH?ts=UNIX`` for calls to ollama.com's API (and any server when ``OLLAMA_AUTH``);
- over ``GET,<token URL>,<base64 of hex sha256 of an empty body>`` when a registry's token
  endpoint is asked for a bearer token (see registry.transport).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import time
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import A3SPowerError
from .store.blobs import write_atomic

log = logging.getLogger(__name__)

KEY_NAME = "id_ed25519"
# What a registry token request signs for its (empty) body: sha256 in hex, then base64.
EMPTY_BODY_DIGEST = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()


def key_path() -> Path:
    return Path.home() / ".ollama" / KEY_NAME


def load_key(create: bool = True) -> Ed25519PrivateKey:
    """The private key; generated (with its ``.pub``) when there is none and ``create`` is set."""
    path = key_path()
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        if not create:
            raise A3SPowerError(f"no key at {path}") from None
        key = Ed25519PrivateKey.generate()
        write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), 0o600)
        write_atomic(path.with_name(KEY_NAME + ".pub"), (public_key_line(key) + "\n").encode(), 0o644)
        log.warning("Couldn't find '%s'. Generated a new private key. Your new public key is: %s",
                    path, public_key_line(key))
        return key
    except (ValueError, OSError) as exc:
        raise A3SPowerError(f"cannot read the private key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise A3SPowerError(f"the private key {path} is not an ed25519 key")
    return key


def public_key_line(key: Ed25519PrivateKey | None = None) -> str:
    """``ssh-ed25519 AAAA...``, as in an authorized_keys file."""
    key = key or load_key()
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def encoded_public_key() -> str:
    """The public key line in unpadded base64url: how ollama.com names this machine's key."""
    return base64.urlsafe_b64encode(public_key_line().encode()).rstrip(b"=").decode()


def sign(data: bytes) -> str:
    """``<public key>:<signature>``, both base64: the Authorization header Ollama sends."""
    key = load_key()
    blob = public_key_line(key).split(" ")[1]
    return f"{blob}:{base64.b64encode(key.sign(data)).decode()}"


def signed_path(method: str, path: str) -> tuple[str, str]:
    """The path with the ``ts`` query Ollama's client adds, and the Authorization header over it."""
    now = str(int(time.time()))
    return f"{path}?ts={now}", sign(f"{method},{path}?ts={now}".encode())


def signin_url(cloud_url: str) -> str:
    """Where a browser connects this machine's key to an ollama.com account."""
    return f"{cloud_url.rstrip('/')}/connect?name={quote(socket.gethostname(), safe='')}&key={encoded_public_key()}"
