"""Prompt building: chat templates (Jinja from GGUF files; Go templates come later), tools, thinking."""

from .chat_template import ChatTemplate, TemplateError

__all__ = ["ChatTemplate", "TemplateError"]
