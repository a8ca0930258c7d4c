"""Imports every architecture's translation, each of which registers itself."""

from . import gptoss, lfm2  # noqa: F401
from . import deepseekocr, nemotron_h_moe  # noqa: F401
from . import gemma3  # noqa: F401
from . import mistral3  # noqa: F401
from . import qwen35  # noqa: F401
from . import gemma4  # noqa: F401
