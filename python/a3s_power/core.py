"""Import point for the C++ core: ``from a3s_power.core import _core``."""

from . import _libs

_libs.preload()

from . import _core  # noqa: E402

__all__ = ["_core"]
