"""Property-based fuzzing of the Go template engine (issue 16): templates come from model files
and requests, data from requests. Whatever they hold, parsing and rendering end, quickly, either
with text or with a TemplateError: never another exception, a hang or a giant allocation."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, strategies as st

from a3s_power.prompt.chat_template import TemplateError
from a3s_power.prompt.gotemplate import GoTemplate, funcs
from a3s_power.prompt.gotemplate.funcs import _BUILTINS
from tests.fuzz_support import fuzz_settings, time_limit

LIMIT_S = 10.0  # hard stop per example: a hang fails the test instead of stalling the suite

# --- templates --------------------------------------------------------------------------------------

FIELDS = ["A", "B", "X", "Messages", "Role", "Content", "Tools", "Function", "Name", "Arguments", "System",
          "Prompt", "Response", "Think", "ToolCalls", "é"]
FUNCTIONS = sorted(_BUILTINS)
FORMATS = ["%d", "%s", "%v", "%q", "%x", "%X", "%c", "%t", "%o", "%b", "%e", "%g", "%G", "%5.2f", "%-4s|", "%08.3f",
           "%+d", "%.3s", "%%", "%!", "%", "%z", "%[1]d", "%.f", "%10v", "a %s b %d"]


def _go_quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


literals = st.one_of(
    st.integers(-3, 6).map(str),
    st.integers(-3, 6).map(str),
    st.sampled_from(["0x1F", "0b101", "0o17", "017", "1_000", "-0", "+2", ".5", "1.5", "-2.25", "1e3", "1e-7",
                     "1e400", "'a'", "'\\n'", "'é'", "'\\x41'", "'\\u00e9'", "true", "false", "nil"]),
    st.text(max_size=4).map(_go_quoted),
    st.sampled_from(FORMATS).map(_go_quoted),
    st.text(st.characters(blacklist_characters="`"), max_size=4).map(lambda t: f"`{t}`"),
)
# Literals Go refuses: each should be a TemplateError, not a crash.
bad_literals = st.sampled_from(['"\\x4"', '"\\q"', '"\\777"', '"\\uD800"', "0x", "1__2", "''", "'ab'", "1.2.3",
                                "9" * 5000, "$", "$undeclared"])


def _field_chain(draw) -> str:
    return "".join("." + draw(st.sampled_from(FIELDS)) for _ in range(draw(st.integers(1, 2))))


@st.composite
def terms(draw, depth: int, scope: tuple[str, ...]) -> str:
    kind = draw(st.sampled_from(["literal", "literal", "dot", "field", "field", "variable", "function", "bad"]
                                + (["paren"] if depth > 0 else [])))
    if kind == "literal":
        return draw(literals)
    if kind == "bad":
        return draw(bad_literals) if draw(st.integers(0, 3)) == 0 else draw(literals)
    if kind == "dot":
        return "."
    if kind == "field":
        return _field_chain(draw)
    if kind == "variable":
        return draw(st.sampled_from(scope)) + (_field_chain(draw) if draw(st.booleans()) else "")
    if kind == "function":
        return draw(st.sampled_from(FUNCTIONS))
    inner = draw(pipelines(depth - 1, scope, declare=False))
    return f"({inner})" + (_field_chain(draw) if draw(st.integers(0, 4)) == 0 else "")


@st.composite
def commands(draw, depth: int, scope: tuple[str, ...]) -> str:
    if draw(st.booleans()):
        function = draw(st.sampled_from(FUNCTIONS))
        args = draw(st.lists(terms(depth, scope), max_size=3))
        return " ".join([function, *args])
    return draw(terms(depth, scope))


@st.composite
def pipelines(draw, depth: int, scope: tuple[str, ...], declare: bool = True, in_range: bool = False) -> str:
    cmds = draw(st.lists(commands(depth, scope), min_size=1, max_size=2))
    text = " | ".join(cmds)
    if declare:
        choice = draw(st.integers(0, 5))
        if choice == 0:
            text = f"{draw(st.sampled_from(['$x', '$y']))} := {text}"
        elif choice == 1:
            text = f"{draw(st.sampled_from(scope))} = {text}"
        elif choice == 2 and in_range:
            text = f"$i, $e := {text}"
    return text


@st.composite
def actions(draw, body: str) -> str:
    left = draw(st.sampled_from(["{{", "{{", "{{- "]))
    right = draw(st.sampled_from(["}}", "}}", " -}}"]))
    return f"{left}{body}{right}"


@st.composite
def node_lists(draw, depth: int, scope: tuple[str, ...], in_range: bool = False) -> str:
    return "".join(draw(st.lists(nodes(depth, scope, in_range), max_size=3)))


@st.composite
def nodes(draw, depth: int, scope: tuple[str, ...], in_range: bool = False) -> str:
    simple = ["text", "action", "action", "action", "comment", "template"] + (["break", "continue"] if in_range else [])
    kind = draw(st.sampled_from(simple + (["if", "range", "range", "with", "block", "elseif"] if depth > 0 else [])))
    if kind == "text":
        return draw(st.sampled_from(["", " ", "\n", "x", "<|im_start|>", " \n\t", "}}", "é"])) \
            if draw(st.booleans()) else draw(st.text(max_size=4))
    if kind == "action":
        return draw(actions(draw(pipelines(1, scope, in_range=in_range))))
    if kind == "comment":
        return draw(actions(f"/* {draw(st.text(st.characters(blacklist_characters='*'), max_size=4))} */"))
    if kind == "template":
        name = draw(st.sampled_from(["a", "b", "missing"]))
        pipe = " " + draw(pipelines(1, scope, declare=False)) if draw(st.booleans()) else ""
        return draw(actions(f'template "{name}"{pipe}'))
    if kind in ("break", "continue"):
        return draw(actions(kind))
    if kind == "block":
        name = draw(st.sampled_from(["a", "b"]))
        head = draw(actions(f'block "{name}" ' + draw(pipelines(0, scope, declare=False))))
        return head + draw(node_lists(depth - 1, ("$",))) + draw(actions("end"))
    pipe = draw(pipelines(0, scope, in_range=kind == "range"))
    # Variables a pipeline declares live until the branch's {{end}}, its {{else}} included.
    inner = scope + tuple(v for v in ("$x", "$y", "$i", "$e") if v + "," in pipe or v + " :=" in pipe)
    inner_range = in_range or kind == "range"
    body = draw(node_lists(depth - 1, inner, inner_range))
    otherwise = ""
    if draw(st.booleans()):
        otherwise = draw(actions("else")) + draw(node_lists(depth - 1, inner, in_range))
    if kind == "elseif":
        head = draw(actions("if " + pipe))
        middle = draw(actions(f"else {draw(st.sampled_from(['if', 'with']))} " + draw(pipelines(0, inner))))
        return head + body + middle + draw(node_lists(depth - 1, inner, in_range)) + otherwise + draw(actions("end"))
    return draw(actions(f"{kind} {pipe}")) + body + otherwise + draw(actions("end"))


@st.composite
def templates(draw) -> str:
    prelude, scope = draw(st.sampled_from([("", ("$",)), ("{{$x := 1}}", ("$", "$x")),
                                           ('{{$x := .}}{{$y := "s"}}', ("$", "$x", "$y"))]))
    defines = "".join(
        '{{define "%s"}}%s{{end}}' % (name, draw(node_lists(1, ("$",)))) for name in draw(st.lists(
            st.sampled_from(["a", "b"]), max_size=2, unique=True)))
    return prelude + defines + draw(node_lists(2, scope))


# Pieces of the grammar, glued in any order: mostly syntax errors, some oddly valid templates.
PIECES = ["{{", "}}", "{{- ", " -}}", "{{/*", "*/}}", "if", "else", "end", "range", "with", "define", "template",
          "block", "break", "continue", " ", ".", ".A", "$", "$x", ":=", "=", "|", ",", "(", ")", '"', "`", "'",
          "1", "-", "x", "\n", "é", "len", "printf", "and", "eq", "nil", "true", '"a"', "0x", "\\"]
template_soup = st.lists(st.sampled_from(PIECES) | st.text(max_size=2), max_size=30).map("".join)

# --- data -------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["A", "B", "X", "a", "b", "x", "messages", "role", "content", "tool_calls", "function",
                        "name", "arguments", "Prompt", "é"]) | st.text(max_size=4)
# Ints stay small: ranging over an int is a loop, and loops over big ones are the render timeout's job.
LEAVES = (st.none() | st.booleans() | st.integers(-5, 8) | st.floats(width=64) | st.text(max_size=8)
          | st.sampled_from([2 ** 63, -(2 ** 63), 1e21, 1e-7, -0.0, 0.1]))
data_values = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                           max_leaves=12)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 8) | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                           max_leaves=8)

# Messages as the native API lets them through: a string role and string content, anything else as
# the client sent it.
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "User", "other", ""]),
     "content": st.text(max_size=10) | st.lists(st.fixed_dictionaries(
         {}, optional={"type": st.sampled_from(["text", "image_url"]) | json_values, "text": json_values}),
         max_size=2)},
    optional={"tool_calls": json_values
              | st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries(
                  {"name": st.text(max_size=5)}, optional={"arguments": json_values | st.text(max_size=6)})},
                  optional={"id": json_values}), max_size=2),
              "thinking": json_values, "images": json_values, "tool_name": json_values, "name": json_values,
              "tool_call_id": json_values}), max_size=4)
tools = st.none() | st.lists(json_values, max_size=2)

# --- properties --------------------------------------------------------------------------------------


def parse(source: str) -> GoTemplate | None:
    try:
        return GoTemplate(source)
    except TemplateError:
        return None


def render(template: GoTemplate, data) -> None:
    try:
        assert isinstance(template.render(data), str)
    except TemplateError:
        pass


def render_chat(template: GoTemplate, conversation, offered, **extra) -> None:
    try:
        assert isinstance(template.render_chat(conversation, tools=offered, **extra), str)
    except TemplateError:
        pass


@fuzz_settings(300)
@given(st.text(max_size=40) | template_soup)
@example("{{é}}")
@example("{{.é}}")
@example("{{" + "(" * 2000 + "1" + ")" * 2000 + "}}")
@example("{{if 1}}" * 1000 + "{{end}}" * 1000)
def test_arbitrary_text_parses_or_raises_template_error(source):
    with time_limit(LIMIT_S):
        template = parse(source)
        if template is not None:
            render(template, {"A": 1, "B": [1, "x"]})
            render_chat(template, [{"role": "user", "content": "hi"}], None)


@fuzz_settings(200)
@given(templates(), data_values)
@example('{{printf "%.999999999f" 1.5}}', None)
@example('{{printf "%.999999999e" 1.5}}', None)
@example('{{index "é" 1}}', None)
def test_structured_templates_render_or_raise_template_error(source, data):
    with time_limit(LIMIT_S):
        template = parse(source)
        if template is not None:
            render(template, data)


@fuzz_settings(100)
@given(templates(), messages, tools, st.sampled_from([None, True, False]))
@example("{{range .Messages}}{{.Content}}{{end}}", [{"role": "assistant", "content": "", "tool_calls": "abc"}],
         None, None)
@example("{{.Prompt}}", [{"role": "user", "content": "", "thinking": 1}, {"role": "user", "content": "",
                                                                           "thinking": 2}], None, None)
@example("{{.Prompt}}", [{"role": "user", "content": "", "images": 1}], None, None)
@example("{{.Prompt}}", [{"role": "user", "content": [{"text": 1}]}], None, None)
@example("{{.Prompt}}", [{"role": "assistant", "content": "", "tool_calls": [{"function": "f"}]}], None, None)
def test_chat_renders_or_raises_template_error(source, conversation, offered, think):
    with time_limit(LIMIT_S):
        template = parse(source)
        if template is not None:
            render_chat(template, conversation, offered, think=think)
            render_chat(template, conversation, offered, prompt="p", suffix="s")


@pytest.mark.parametrize("source", [
    '{{$x := "ab"}}{{range 64}}{{$x = printf "%s%s" $x $x}}{{end}}{{len $x}}',
    '{{$x := "ab"}}{{range 64}}{{$x = print $x $x}}{{end}}{{len $x}}',
    '{{$x := "&"}}{{range 64}}{{$x = html $x $x}}{{end}}{{len $x}}',
    '{{$x := "a"}}{{range 64}}{{$x = printf "%s" $x | printf "%s%s%s" $x $x}}{{end}}{{len $x}}',
])
def test_a_growing_string_is_refused_before_it_exhausts_memory(source, monkeypatch):
    # Each step is one allocation no timeout can stop: 2**64 characters would be the last.
    monkeypatch.setattr(funcs, "MAX_OUTPUT", 1 << 20)
    with time_limit(LIMIT_S), pytest.raises(TemplateError, match="larger than a prompt"):
        GoTemplate(source).render({})


def test_index_counts_a_strings_bytes_as_go_does():
    # Found while fuzzing: the bounds were the string's characters, the indexes its bytes.
    assert GoTemplate('{{index "é" 1}} {{index "ab" 0}}').render({}) == "169 97"
    with pytest.raises(TemplateError, match="out of range"):
        GoTemplate('{{index "é" 2}}').render({})
