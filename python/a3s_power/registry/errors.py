"""Registry failures."""

from __future__ import annotations

from ..errors import A3SPowerError


class RegistryError(A3SPowerError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundInRegistry(RegistryError):
    """The registry has no such model (a 404 on the manifest)."""
