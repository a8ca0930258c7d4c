"""Go's text/template, the part of it that Ollama's model templates use.

Ollama registry models carry their prompt format as a Go template (the TEMPLATE layer, or a
Modelfile's TEMPLATE). This package parses and executes those templates in pure Python with Go's
semantics where a prompt could notice the difference: whitespace trimming, truthiness, ``eq`` with
several operands, byte-length ``len``, ``fmt``-style printing, and ``json`` written the way Go's
``encoding/json`` writes it (compact, ``<>&`` escaped).

One deliberate difference: a missing map key (or a field of a missing value) is empty and false
instead of Go's ``<no value>``, because Ollama fills only some of a template's fields per request.

:func:`template_data` builds the values Ollama passes to a template (``.Messages``, ``.Tools``,
``.System``, ``.Think``, ...) from OpenAI/Ollama-style request dicts, and :meth:`GoTemplate.render_chat`
reproduces Ollama's whole execution, including templates written before ``.Messages`` existed.

The package, bottom up: ``values`` (what templates see, and Go's ``fmt`` and ``encoding/json``),
``data`` (Ollama's data model), ``funcs`` (the built-in functions), ``lex``, ``parse``, ``exec``, and
``template`` (:class:`GoTemplate`, the public interface).
"""

from __future__ import annotations

from .data import template_data
from .template import GoTemplate
from .values import TemplateList, TemplateRecord, go_json

__all__ = ["GoTemplate", "TemplateRecord", "TemplateList", "template_data", "go_json"]
