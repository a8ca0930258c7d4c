"""The converter's one error: what in the model folder cannot be converted, and why."""

from __future__ import annotations

from ...errors import A3SPowerError


class ConvertError(A3SPowerError):
    pass


class ConvertCancelled(ConvertError):
    def __init__(self) -> None:
        super().__init__("conversion cancelled")
