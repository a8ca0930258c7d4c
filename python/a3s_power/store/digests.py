"""Blob digests: ``sha256:<64 hex>`` on the wire, ``sha256-<64 hex>`` as a file name."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import A3SPowerError

_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
CHUNK = 1 << 20


class InvalidDigest(A3SPowerError, ValueError):
    pass


def normalize(digest: object) -> str:
    """``sha256:<lower hex>``; raises InvalidDigest for anything that is not exactly a sha256 digest."""
    match = _DIGEST.fullmatch(digest or "") if isinstance(digest, str) else None
    if not match:
        raise InvalidDigest(f"invalid digest format: {digest!r}")
    return "sha256:" + match.group(1).lower()


def is_digest(text: str) -> bool:
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def filename(digest: str) -> str:
    return normalize(digest).replace(":", "-")


def short(digest: str) -> str:
    """The 12 hex digits Ollama shows in progress lines and listings."""
    return normalize(digest)[7:19]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return "sha256:" + h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
