"""Running models: options, the loaded-model runner over ``_core``, and (later) the scheduler."""

from .options import Options, parse_options
from .runner import Chunk, LoadedModel

__all__ = ["Chunk", "LoadedModel", "Options", "parse_options"]
