"""Property-based fuzzing of JSON Schema to GBNF (issue 16): a request's ``format`` is any JSON. It
compiles to a grammar or fails with InvalidOptionError (a 400), never another exception and never
a hang; and every grammar it makes is one llama.cpp accepts."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, strategies as st

from a3s_power.core import _core
from a3s_power.errors import InvalidOptionError
from a3s_power.prompt.json_schema import schema_to_gbnf
from tests.conftest import collect, context_params, greedy
from tests.fuzz_support import fuzz_settings, time_limit

LIMIT_S = 10.0

# --- schemas ----------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "name", "x y", "é", "\"q\"", "\\", "", "\n", "\ud800"]) | st.text(max_size=4)
NUMBERS = (st.integers(-20, 20) | st.integers(-(10 ** 20), 10 ** 20) | st.sampled_from([0.5, -1.5, 1e300, -1e300])
           | st.floats())
json_values = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=5) | st.just("\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3), max_leaves=6)
TYPES = ["object", "array", "string", "integer", "number", "boolean", "null"]
PATTERN_PIECES = ["a", "b", "é", ".", "*", "+", "?", "(", ")", "[", "]", "{", "}", "|", "^", "$", "\\", "-", ",", "0",
                  "1", "9", "d", "w", "s", "D", "W", "S", "x", "u", ":", "?:", "?P<", ">", "=", "!", "<", "{2}",
                  "{1,3}", "{0,}", "{3,1}", "{2001}", "{0,5000}", "\\d", "\\w", "\\s", "\\b", "\\x4", "\\x41",
                  "\\u00e9", "\\ud800", "[a-z]", "[^0-9]", "[\\d-]", "[z-a]", "\\1", "\"", "\n", "\x00"]
patterns = st.lists(st.sampled_from(PATTERN_PIECES), max_size=8).map("".join) | st.text(max_size=6)
counts = st.integers(0, 5) | st.sampled_from([-1, 1.5, True, "3", None, 2000, 2001, 10 ** 9])


def _maybe(draw, schema: dict, key: str, strategy) -> None:
    if draw(st.integers(0, 2)) == 0:
        schema[key] = draw(strategy)


@st.composite
def leaf_schemas(draw):
    kind = draw(st.sampled_from(["type", "type", "string", "number", "const", "enum", "ref", "bool", "empty",
                                 "junk"]))
    if kind == "type":
        return {"type": draw(st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES + ["nope"]), max_size=3)
                             | json_values)}
    if kind == "string":
        schema = {"type": "string"}
        _maybe(draw, schema, "minLength", counts)
        _maybe(draw, schema, "maxLength", counts)
        _maybe(draw, schema, "pattern", patterns)
        _maybe(draw, schema, "format", st.sampled_from(["date", "time", "date-time", "uuid", "email", "uri"]))
        return schema
    if kind == "number":
        schema = {"type": draw(st.sampled_from(["integer", "number"]))}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            _maybe(draw, schema, key, NUMBERS | st.booleans())
        return schema
    if kind == "const":
        return {"const": draw(json_values)}
    if kind == "enum":
        return {"enum": draw(st.lists(json_values, max_size=3) | json_values)}
    if kind == "ref":
        return {"$ref": draw(st.sampled_from(["#", "#/$defs/a", "#/$defs/b", "#/definitions/c", "#/$defs/missing",
                                              "#/properties/a", "#/items", "#/anyOf/0", "other.json#", "#/$defs/a/x"])
                             | json_values)}
    if kind == "bool":
        return draw(st.booleans())
    if kind == "empty":
        return {}
    return draw(json_values)


def composite_schemas(children):
    @st.composite
    def build(draw):
        kind = draw(st.sampled_from(["object", "object", "array", "anyOf", "oneOf", "allOf", "nullable"]))
        if kind == "object":
            schema: dict = {"type": "object"} if draw(st.booleans()) else {}
            schema["properties"] = draw(st.dictionaries(NAMES, children, max_size=3) | json_values)
            _maybe(draw, schema, "required", st.lists(NAMES | json_values, max_size=3) | json_values)
            _maybe(draw, schema, "additionalProperties", st.booleans() | children)
            return schema
        if kind == "array":
            schema = {"type": "array"} if draw(st.booleans()) else {}
            _maybe(draw, schema, "items", children | st.lists(children, max_size=2))
            _maybe(draw, schema, "prefixItems", st.lists(children, max_size=2) | json_values)
            _maybe(draw, schema, "additionalItems", st.booleans() | children)
            _maybe(draw, schema, "minItems", counts)
            _maybe(draw, schema, "maxItems", counts)
            return schema
        if kind == "nullable":
            schema = draw(children)
            if isinstance(schema, dict):
                schema = {**schema, "nullable": draw(st.booleans() | json_values)}
            return schema
        options = draw(st.lists(children, max_size=3) | json_values)
        schema = {kind: options}
        if draw(st.integers(0, 2)) == 0:  # keywords beside the combinator are merged into each option
            extra = draw(leaf_schemas())
            schema.update(extra if isinstance(extra, dict) else {"type": draw(st.sampled_from(TYPES))})
        return schema

    return build()


schemas = st.recursive(leaf_schemas(), composite_schemas, max_leaves=8)


@st.composite
def root_schemas(draw):
    schema = draw(schemas)
    if isinstance(schema, dict) and draw(st.booleans()):
        schema = {**schema, "$defs": draw(st.fixed_dictionaries({}, optional={"a": schemas, "b": schemas}))}
        if draw(st.integers(0, 3)) == 0:
            schema["definitions"] = {"c": draw(schemas)}
    return schema


def compile_schema(schema) -> str | None:
    try:
        grammar = schema_to_gbnf(schema)
    except InvalidOptionError:
        return None
    assert isinstance(grammar, str) and grammar.startswith("root ::= ")
    return grammar


REGRESSIONS = [
    {"type": "integer", "minimum": math.inf},
    {"type": "integer", "maximum": math.nan},
    {"type": "integer", "minimum": 10 ** 20},
    {"type": "integer", "maximum": -(10 ** 20)},
    {"type": "object", "required": [[]]},
    {"type": "object", "required": [1]},
    {"type": "array", "prefixItems": 3},
    {"allOf": 3},
    {"allOf": [{"properties": []}, {"properties": {"a": {}}}]},
    {"allOf": [{"properties": {"a": {}}}, {"properties": 1}]},
    {"allOf": [{"required": 1}, {"required": ["a"]}]},
    {"allOf": [{"enum": [1]}, {"enum": 1}]},
    {"allOf": [{"minimum": "a"}, {"minimum": 1}]},
    {"type": "string", "pattern": "(?P<x"},
    {"type": "string", "pattern": "[\\"},
    {"type": "string", "pattern": "\\ud800"},
    {"const": "\ud800"},
    {"enum": ["\udfff", 1]},
    {"type": "object", "properties": {"\ud800": {}}, "required": ["\ud800"]},
    {"type": "string", "minLength": 2001},
    {"type": "string", "maxLength": 5000},
    {"type": "array", "minItems": 3000, "items": {}},
    {"type": "string", "pattern": "a{2001}"},
    {"type": "string", "pattern": "(a{0,50}){50}"},
    {"maxItems": 2000},
    {"type": "string", "pattern": "((a{0,50}){3}){50}"},
    {"$ref": []},
    {"$ref": None},
    {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}},
     "$ref": "#/$defs/a"},
]


@fuzz_settings(400, deadline_ms=3000)
@given(root_schemas() | json_values)
def test_any_schema_compiles_or_raises_invalid_option(schema):
    with time_limit(LIMIT_S):
        compile_schema(schema)


@pytest.mark.parametrize("schema", REGRESSIONS, ids=range(len(REGRESSIONS)))
def test_regressions_compile_or_raise_invalid_option(schema):
    with time_limit(LIMIT_S):
        compile_schema(schema)


# --- llama.cpp accepts every grammar made --------------------------------------------------------------

class LlamaGrammars:
    """Submits grammars to an engine over the tiny model: building the grammar sampler parses the
    grammar, and a grammar llama.cpp refuses fails the submit with InvalidOptionError."""

    def __init__(self, model: _core.Model) -> None:
        self.model = model
        self.engine = _core.Engine(model, context_params(n_ctx=64))
        self.prompt = model.tokenize("hi", True, True)

    def check(self, grammar: str) -> None:
        rid = self.engine.submit(self.prompt, _core.GenerateParams(sampling=greedy(grammar=grammar), num_predict=1))
        self.engine.cancel(rid)
        collect(self.engine, [rid])

    def close(self) -> None:
        self.engine.close()


@pytest.fixture(scope="module")
def llama_grammars(tiny):
    checker = LlamaGrammars(tiny)
    yield checker
    checker.close()


def accepted_by_llama(checker: LlamaGrammars, schema) -> None:
    grammar = compile_schema(schema)
    if grammar is not None:
        try:
            checker.check(grammar)
        except InvalidOptionError as e:
            raise AssertionError(f"llama.cpp refused the grammar of {schema!r}: {e}\n{grammar}") from None


@fuzz_settings(40, deadline_ms=5000)
@given(root_schemas())
@example({"type": "object", "properties": {"a": {"type": "integer", "minimum": -5, "maximum": 1234}}})
def test_llama_cpp_accepts_every_grammar_made(llama_grammars, schema):
    with time_limit(LIMIT_S):
        accepted_by_llama(llama_grammars, schema)


@pytest.mark.parametrize("schema", REGRESSIONS, ids=range(len(REGRESSIONS)))
def test_llama_cpp_accepts_the_regressions_that_compile(llama_grammars, schema):
    with time_limit(LIMIT_S):
        accepted_by_llama(llama_grammars, schema)
