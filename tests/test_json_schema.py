"""JSON Schema to GBNF: the grammar text, its language (checked with a small recognizer and
against jsonschema), its acceptance by llama.cpp, and real constrained generation with SmolLM2."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from a3s_power.core import _core
from a3s_power.errors import InvalidOptionError
from a3s_power.prompt.json_schema import JSON_GRAMMAR, InvalidSchemaError, schema_to_gbnf
from tests.conftest import collect, greedy
from tests.gbnf_matcher import Grammar

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def valid(schema, value) -> bool:
    try:
        jsonschema.validate(value, schema, format_checker=FORMATS)
        return True
    except jsonschema.ValidationError:
        return False


def matches(schema, text: str) -> bool:
    return Grammar(schema_to_gbnf(schema)).matches(text)


# --- the text of simple grammars -----------------------------------------------------------------

WS = 'ws ::= [ \\t]{0,2} | "\\n" [ \\t]{0,24}\n'


def test_boolean_grammar_text():
    assert schema_to_gbnf({"type": "boolean"}) == 'root ::= ws boolean\n' + WS + 'boolean ::= "true" | "false"\n'


def test_const_and_enum_grammar_text():
    assert schema_to_gbnf({"const": "a\"b"}) == 'root ::= ws "\\"a\\\\\\"b\\""\n' + WS
    assert schema_to_gbnf({"enum": [1, "x", None]}) == 'root ::= ws schema\nschema ::= "1" | "\\"x\\"" | "null"\n' + WS


def test_object_grammar_text_keeps_declared_order_and_optional_members():
    grammar = schema_to_gbnf({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
                              "required": ["a"]})
    assert grammar == (
        "root ::= ws schema\n"
        'schema-a-kv ::= "\\"a\\"" ws ":" ws integer ws\n'
        'schema-b-kv ::= "\\"b\\"" ws ":" ws boolean ws\n'
        'schema ::= "{" ws schema-a-kv ( "," ws schema-b-kv )? "}"\n'
        + WS
        + 'integer ::= "-"? integral\n'
        'integral ::= "0" | [1-9] [0-9]{0,15}\n'
        'boolean ::= "true" | "false"\n'
    )


def test_json_grammar_is_any_object():
    grammar = Grammar(JSON_GRAMMAR)
    for text in ['{}', '{"a": [1, 2.5e10, -0.1, true, false, null, {"b": "x\\n\\u00e9\\"", "c": []}]}',
                 '\n  {\n    "a": 1\n  }', ' {"nested": {"deeper": {"deepest": [[], {}]}}}']:
        assert grammar.matches(text), text
        json.loads(text)
    for text in ['[1]', '"text"', '{"a":1} ', '{"a":01}', '{"a":1,}', "{'a':1}", '{"a":1', '{"a":.5}',
                 '{' + ' ' * 30 + '}', '\n\n{}', '{"a":"tab\there"}', '{"a":12345678901234567}']:
        assert not grammar.matches(text), text


# --- languages: what each grammar accepts and rejects ----------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "email": {"type": "string"},
        "admin": {"type": "boolean"},
    },
    "required": ["name", "admin"],
}

LANGUAGE_CASES = [
    (PERSON,
     ['{"name":"Ann","admin":true}', '{"name": "Ann", "age": 30, "email": "a@b.c", "admin": false}',
      '{"name":"Ann","email":"x","admin":false}', '{\n  "name": "Ann",\n  "age": 3,\n  "admin": true\n}'],
     ['{"admin":true}', '{"name":"Ann"}', '{"admin":true,"name":"Ann"}', '{"name":"Ann","admin":true,"x":1}',
      '{"name":"Ann","age":"3","admin":true}', '{"name":"Ann",,"admin":true}', '{}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
     ['{}', '{"a":1}', '{"b":2}', '{"a":1,"b":2}'],
     ['{"b":2,"a":1}', '{,"b":2}', '{"a":1,}', '{"c":3}']),
    ({"type": "object", "additionalProperties": {"type": "integer"}},
     ['{}', '{"x":1}', '{"x":1, "y":-2}'],
     ['{"x":"1"}', '{"x":1,}']),
    ({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"], "additionalProperties": True},
     ['{"id":1}', '{"id":1,"note":"x","n":[1]}'],
     ['{"note":"x"}', '{"note":"x","id":1}']),
    ({"type": "object", "required": ["kind"]},
     ['{"kind":"x"}', '{"kind":[1,{"a":null}]}'],
     ['{}', '{"other":1}']),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
     ['[1,2]', '[1, 2, 3]', '[ 1 , 2 ]'],
     ['[]', '[1]', '[1,2,3,4]', '[1,"2"]', '[1,2,]']),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 2},
     ['[]', '["a"]', '["a","b"]'],
     ['["a","b","c"]', '[1]']),
    ({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
     ['["a",1]', '[ "a" , 1 ]'],
     ['["a"]', '[1,"a"]', '["a",1,2]']),
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "boolean"}, "maxItems": 3},
     ['["a"]', '["a",true]', '["a",true,false]'],
     ['["a",true,false,true]', '[true]']),
    ({"enum": ["red", "green", 3, None, {"a": 1}]},
     ['"red"', '"green"', '3', 'null', '{"a":1}'],
     ['"blue"', '4', '"Red"']),
    ({"type": ["string", "null"]},
     ['"x"', 'null'],
     ['1', 'true']),
    ({"anyOf": [{"type": "integer"}, {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}]},
     ['7', '-3', '{"x":"y"}'],
     ['"7"', '{}', '1.5']),
    ({"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"],
      "oneOf": [{"properties": {"kind": {"const": "a"}}, "required": ["kind"]},
                {"properties": {"kind": {"const": "b"}, "n": {"type": "integer"}}, "required": ["kind", "n"]}]},
     ['{"v":1,"kind":"a"}', '{"v":1.5e3,"kind":"b","n":2}'],
     ['{"v":1}', '{"v":1,"kind":"b"}', '{"v":1,"kind":"c"}']),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
     ['{"a":"x","b":1}'],
     ['{"a":"x"}', '{"b":1}', '{"b":1,"a":"x"}']),
    ({"$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                          "required": ["x", "y"]}},
      "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
      "required": ["from", "to"]},
     ['{"from":{"x":0,"y":1},"to":{"x":-2.5,"y":3}}'],
     ['{"from":{"x":0},"to":{"x":1,"y":1}}']),
    ({"definitions": {"tree": {"type": "object", "properties": {"value": {"type": "integer"},
                                                                 "children": {"type": "array",
                                                                              "items": {"$ref": "#/definitions/tree"}}},
                               "required": ["value"]}},
      "$ref": "#/definitions/tree"},
     ['{"value":1}', '{"value":1,"children":[{"value":2},{"value":3,"children":[{"value":4,"children":[]}]}]}'],
     ['{"value":1,"children":[{}]}', '{"children":[]}']),
    ({"type": "object",
      "properties": {"name": {"type": "string"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
      "required": ["name", "next"]},
     ['{"name":"a","next":null}', '{"name":"a","next":{"name":"b","next":null}}'],
     ['{"name":"a","next":{"name":"b"}}']),
    ({"type": "string", "minLength": 2, "maxLength": 4},
     ['"ab"', '"abcd"', '"\\n\\u00e9"', '"a\\"b"'],
     ['"a"', '"abcde"', '""']),
    ({"type": "number", "minimum": 0},
     ['0', '1.5', '2e3'],
     ['-1', '-0.5']),
    ({"type": "string", "format": "date"},
     ['"2024-02-28"', '"1999-12-31"', '"2023-04-30"'],
     ['"2024-02-30"', '"2023-04-31"', '"2024-13-01"', '"2024-1-01"', '"0000-01-01"']),
    ({"type": "string", "format": "date-time"},
     ['"2024-02-28T13:45:00Z"', '"2024-02-28T13:45:00.123+02:00"'],
     ['"2024-02-28 13:45:00Z"', '"2024-02-28T24:00:00Z"', '"2024-02-28T13:45:00"']),
    ({"type": "string", "format": "time"},
     ['"23:59:59Z"', '"00:00:00.5-05:30"'],
     ['"24:00:00Z"', '"12:60:00Z"']),
    ({"type": "string", "format": "uuid"},
     ['"123e4567-e89b-12d3-a456-426614174000"'],
     ['"123e4567e89b12d3a456426614174000"', '"123e4567-e89b-12d3-a456-42661417400"']),
    ({"type": "string", "format": "email"},
     ['"ann.lee+x@example.co.uk"'],
     ['"ann"', '"@example.com"', '"ann@"']),
    ({"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
     ['1', '10'],
     ['0', '11', '-1', '5.0']),
    # What a forced tool choice asks for: one of the tools' names with its arguments.
    ({"anyOf": [{"type": "object",
                 "properties": {"name": {"const": "get_weather"},
                                "arguments": {"type": "object", "properties": {"city": {"type": "string"}},
                                              "required": ["city"]}},
                 "required": ["name", "arguments"], "additionalProperties": False},
                {"type": "object", "properties": {"name": {"const": "now"}, "arguments": {"type": "object"}},
                 "required": ["name", "arguments"], "additionalProperties": False}]},
     ['{"name": "get_weather", "arguments": {"city": "Paris"}}', '{"name":"now","arguments":{}}'],
     ['{"name":"other","arguments":{}}', '{"name":"get_weather","arguments":{}}', '{"name":"now"}']),
]


@pytest.mark.parametrize("schema, good, bad", LANGUAGE_CASES, ids=[f"case{i}" for i in range(len(LANGUAGE_CASES))])
def test_grammar_language(schema, good, bad):
    grammar = Grammar(schema_to_gbnf(schema))
    for text in good:
        assert valid(schema, json.loads(text)), f"fixture error: {text} should be valid"
        assert grammar.matches(text), f"rejected valid {text}"
    for text in bad:
        assert not grammar.matches(text), f"accepted {text}"


@pytest.mark.parametrize("low, high, exclusive", [
    (0, 100, False), (7, 1234, False), (-50, 50, False), (-1100, -90, False), (None, 5, False),
    (-3, None, False), (99, None, False), (0.5, 9.5, False), (0, 10, True), (None, -1000, True),
])
def test_integer_ranges_match_exactly(low, high, exclusive):
    schema: dict = {"type": "integer"}
    if low is not None:
        schema["exclusiveMinimum" if exclusive else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if exclusive else "maximum"] = high
    grammar = Grammar(schema_to_gbnf(schema))
    validator = jsonschema.Draft202012Validator(schema)
    for n in list(range(-1300, 1300)) + [10 ** 9, -10 ** 9]:
        assert grammar.matches(str(n)) == validator.is_valid(n), n
    assert not grammar.matches("007") and not grammar.matches("-0")


def test_draft4_boolean_exclusive_bounds():
    grammar = Grammar(schema_to_gbnf({"type": "integer", "minimum": 1, "exclusiveMinimum": True,
                                      "maximum": 4, "exclusiveMaximum": True}))
    assert [n for n in range(-2, 8) if grammar.matches(str(n))] == [2, 3]


@pytest.mark.parametrize("pattern, candidates", [
    (r"^[A-Z]{2}\d{1,3}(-[a-z]+)?$", ["AB1", "AB123", "AB1234", "A1", "AB12-xy", "AB12-", "ab12", "AB12-XY"]),
    (r"^(cat|dog)s?$", ["cat", "cats", "dog", "dogs", "cow", "catss", ""]),
    (r"^\w+@\w+\.com$", ["a@b.com", "a_1@b2.com", "a@b.org", "@b.com", "a b@c.com"]),
    (r'^say "hi"\\$', ['say "hi"\\', 'say "hi"', "say hi\\"]),
    (r"^[^0-9 ]+$", ["abc", "ab1", "a b", "é!", ""]),
    (r"^a.c$", ["abc", "a c", "ac", "a\u00e9c", "abbc"]),
    (r"^\s?x{2,}$", ["xx", " xxx", "\txx", "x", "  xx"]),
    (r"^(?:ab)+(?P<end>[.!])?$", ["ab", "abab!", "aba", "ab.", "!"]),
    (r"^[a-c-]+$", ["a-b", "abc-", "d"]),
    (r"^[\d.]{3}$", ["1.2", "...", "12", "a.1"]),
    (r"\d{3}", ["123", "12"]),  # unanchored: the whole string must match, which search() accepts too
])
def test_patterns_match_like_python_re(pattern, candidates):
    schema = {"type": "string", "pattern": pattern}
    grammar = Grammar(schema_to_gbnf(schema))
    bare = pattern.strip("^$")
    for candidate in candidates:
        expected = re.fullmatch(bare, candidate) is not None
        assert grammar.matches(json.dumps(candidate, ensure_ascii=False)) == expected, candidate
        if expected:
            assert valid(schema, candidate)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, message", [
    ([], "object or a boolean"),
    ("json", "object or a boolean"),
    (None, "object or a boolean"),
    (False, "false"),
    ({"$ref": "#/$defs/missing"}, "cannot resolve"),
    ({"$ref": "https://example.com/schema.json"}, "only references within"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/a"}}}, "cannot resolve"),
    ({"type": "strnig"}, "unknown type"),
    ({"enum": []}, "enum"),
    ({"type": "string", "pattern": "(?=a)b"}, "lookaround"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference"),
    ({"type": "string", "pattern": "(ab"}, "missing"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "nothing in common"),
    ({"type": "object", "properties": {"a": {"type": 5}}}, "unknown type"),
    ({"$ref": "#"}, "nothing but itself"),
])
def test_invalid_schemas(schema, message):
    with pytest.raises(InvalidSchemaError, match=message):
        schema_to_gbnf(schema)


def test_invalid_schema_error_is_an_invalid_option():
    assert issubclass(InvalidSchemaError, InvalidOptionError)
    assert issubclass(InvalidSchemaError, ValueError)


def test_true_schema_is_any_value():
    grammar = Grammar(schema_to_gbnf(True))
    assert all(grammar.matches(t) for t in ['1', '"s"', '[1,{"a":null}]', 'true'])
    assert Grammar(schema_to_gbnf({})).matches('[]')


# --- llama.cpp: the grammars parse, and they constrain SmolLM2 --------------------------------------

def llama_accepts(engine, model, grammar: str) -> None:
    """Submitting builds the grammar sampler, which parses the grammar (or raises)."""
    rid = engine.submit(model.tokenize("hi", True, True),
                        _core.GenerateParams(sampling=greedy(grammar=grammar), num_predict=1))
    engine.cancel(rid)
    collect(engine, [rid])


def test_llama_cpp_accepts_every_grammar(smollm2, make_engine):
    engine = make_engine(smollm2, n_ctx=256)
    llama_accepts(engine, smollm2, JSON_GRAMMAR)
    for schema, _, _ in LANGUAGE_CASES:
        llama_accepts(engine, smollm2, schema_to_gbnf(schema))
    for pattern in [r"^[A-Z]{2}\d{1,3}(-[a-z]+)?$", r'^say "hi"\\$', r"^[^0-9 ]+$", r"^\s?x{2,}$"]:
        llama_accepts(engine, smollm2, schema_to_gbnf({"type": "string", "pattern": pattern}))
    llama_accepts(engine, smollm2, schema_to_gbnf({"type": "integer", "minimum": -1100, "maximum": 1234}))


def chat(model, request: str) -> list[int]:
    return model.tokenize(f"<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n", True, True)


def generate(engine, prompt: list[int], sampling, num_predict: int):
    # Constrained sampling can be slow on a busy two-core machine: allow more than the usual 120 s.
    rid = engine.submit(prompt, _core.GenerateParams(sampling=sampling, num_predict=num_predict))
    return collect(engine, [rid], timeout_s=600)[rid]


GENERATION_CASES = [
    ("Describe a person as JSON.",
     {"type": "object",
      "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0,
                                                                           "maximum": 120},
                     "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 15}, "maxItems": 2}},
      "required": ["name", "age"]}),
    ("Report the status of the job as JSON.",
     {"type": "object",
      "properties": {"status": {"enum": ["ok", "error"]}, "code": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                     "when": {"type": "string", "format": "date"},
                     "ticket": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}},
      "required": ["status", "code", "when", "ticket"]}),
    ("List a few small numbers.",
     {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 4}),
]


@pytest.mark.parametrize("request_text, schema", GENERATION_CASES, ids=["person", "status", "numbers"])
def test_greedy_generation_follows_the_schema(smollm2, make_engine, request_text, schema):
    engine = make_engine(smollm2, n_ctx=512)
    result = generate(engine, chat(smollm2, request_text), greedy(grammar=schema_to_gbnf(schema)), num_predict=200)
    assert result.done_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), schema, format_checker=FORMATS)


@pytest.mark.parametrize("seed", [1, 2])
def test_sampled_generation_follows_the_schema(smollm2, make_engine, seed):
    request_text, schema = GENERATION_CASES[1]
    sampling = _core.SamplingParams()
    sampling.temperature = 1.0
    sampling.seed = seed
    sampling.grammar = schema_to_gbnf(schema)
    engine = make_engine(smollm2, n_ctx=512)
    result = generate(engine, chat(smollm2, request_text), sampling, num_predict=200)
    assert result.done_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), schema, format_checker=FORMATS)


def test_json_format_gives_an_object(smollm2, make_engine):
    engine = make_engine(smollm2, n_ctx=512)
    result = generate(engine, chat(smollm2, "Give me the name and age of a person in JSON."),
                      greedy(grammar=JSON_GRAMMAR), num_predict=120)
    assert result.done_reason == "stop", result.text
    assert isinstance(json.loads(result.text), dict)
