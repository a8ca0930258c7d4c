"""Property-based fuzzing of Jinja chat templates (issue 16): a template comes from a GGUF file or a
request, messages and tools from the request. Parsing and rendering end with text or a
TemplateError, never another exception, and no template reaches or shows Python's internals."""

from __future__ import annotations

import pytest
from hypothesis import example, given, strategies as st

from a3s_power.prompt import chat_template
from a3s_power.prompt.chat_template import ChatTemplate, TemplateError
from tests.fuzz_support import fuzz_settings, time_limit

LIMIT_S = 10.0
# Python warns about templates like {{ none[1] }} while compiling them; nothing to see here.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

# --- data -------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["role", "content", "name", "tool_calls", "function", "arguments", "type", "id", "x",
                        "items", "keys", "__class__", "mro"]) | st.text(max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(width=64) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]) | json_values,
                           "content": st.text(max_size=10) | json_values},
                          optional={"tool_calls": json_values | st.lists(st.fixed_dictionaries(
                              {"type": st.just("function"), "id": st.text(max_size=3), "function": st.fixed_dictionaries(
                                  {"name": st.text(max_size=4), "arguments": json_values})}), max_size=2),
                              "name": json_values, "reasoning_content": json_values})
    | json_values, max_size=4)
tools = st.none() | st.lists(json_values, max_size=2)

# --- templates --------------------------------------------------------------------------------------

ATOMS = ["messages", "message", "message['role']", "message.content", "message['tool_calls']", "messages[0]",
         "messages[-1]['content']", "loop.index0", "loop.first", "loop.last", "loop.length", "tools", "bos_token",
         "eos_token", "add_generation_prompt", "ns.x", "ns", "x", "none", "true", "1", "-2", "1.5", "0", "'a'",
         "'<|im_start|>'", "''", "[1, 'b']", "{'a': 1}", "range(3)", "namespace(x=1)", "undefined_name", "loop",
         "self", "caller", "varargs", "kwargs", "tool", "tool.function", "tool['function']['parameters']",
         "strftime_now('%Y')", "raise_exception('no')", "lipsum(1)", "cycler(1, 2).next()", "joiner()()",
         "dict(a=1)", "'x' * 3", "(messages | length)"]
FILTERS = ["tojson", "tojson(indent=2)", "trim", "upper", "lower", "length", "first", "last", "join(', ')", "join",
           "replace('a', 'b')", "default('x')", "default(none, true)", "string", "int", "float", "list",
           "map(attribute='role')", "map('upper')", "selectattr('role', 'equalto', 'user')",
           "rejectattr('content')", "items", "dictsort", "unique", "reverse", "sort", "sort(attribute='role')",
           "indent(2)", "center(5)", "truncate(3)", "wordwrap(5)", "format(1)", "round", "abs", "sum", "min", "max",
           "batch(2)", "slice(2)", "groupby('role')", "safe", "e", "striptags", "title", "capitalize", "count",
           "attr('role')", "select", "reject", "urlencode", "wordcount", "filesizeformat", "pprint", "xmlattr",
           "selectattr('type', 'defined')", "map('tojson')", "items | list", "random", "nonexistent_filter"]
METHODS = ["strip()", "split()", "startswith('x')", "items()", "get('role')", "keys()", "values()", "lower()",
           "replace('a', 'b')", "rstrip('x')", "endswith('>')", "title()", "format(1)", "split('<', 1)",
           "append(1)", "pop()", "update({})", "count('a')", "index('q')"]
TESTS = ["defined", "undefined", "string", "number", "none", "mapping", "iterable", "sequence", "callable",
         "true", "false", "integer", "float", "boolean", "divisibleby 2", "equalto 1", "in [1]", "odd", "even"]
BINOPS = [" + ", " - ", " * ", " / ", " // ", " % ", " ** ", " ~ ", " == ", " != ", " < ", " >= ", " and ", " or ",
          " in ", " not in "]


@st.composite
def expressions(draw, depth: int) -> str:
    kind = draw(st.sampled_from(["atom", "atom", "filter", "method", "test", "index"]
                                + (["binop", "binop", "not", "cond", "paren"] if depth > 0 else [])))
    if kind == "atom":
        return draw(st.sampled_from(ATOMS))
    if kind == "filter":
        return f"{draw(expressions(depth - 1)) if depth > 0 else draw(st.sampled_from(ATOMS))} | " \
               f"{draw(st.sampled_from(FILTERS))}"
    if kind == "method":
        return f"{draw(st.sampled_from(ATOMS))}.{draw(st.sampled_from(METHODS))}"
    if kind == "test":
        return f"{draw(st.sampled_from(ATOMS))} is {draw(st.sampled_from(['', 'not ']))}{draw(st.sampled_from(TESTS))}"
    if kind == "index":
        index = draw(st.sampled_from(["0", "-1", "1:", ":2", "x", "'role'"]))
        return f"{draw(st.sampled_from(ATOMS))}[{index}]"
    if kind == "binop":
        return draw(expressions(depth - 1)) + draw(st.sampled_from(BINOPS)) + draw(expressions(depth - 1))
    if kind == "not":
        return "not " + draw(expressions(depth - 1))
    if kind == "cond":
        return f"{draw(expressions(depth - 1))} if {draw(expressions(depth - 1))} else {draw(expressions(depth - 1))}"
    return f"({draw(expressions(depth - 1))})"


@st.composite
def blocks(draw, depth: int, in_loop: bool = False) -> str:
    left = draw(st.sampled_from(["{%", "{%", "{%-"]))
    right = draw(st.sampled_from(["%}", "%}", "-%}"]))
    kinds = ["text", "output", "output", "set", "nsset"] + (["break", "continue"] if in_loop else [])
    if depth > 0:
        kinds += ["for", "for", "if", "macro", "filter", "raw"]
    kind = draw(st.sampled_from(kinds))
    inner = lambda loop=in_loop: "".join(draw(st.lists(blocks(depth - 1, loop), max_size=3)))  # noqa: E731
    if kind == "text":
        return draw(st.sampled_from(["", "\n", "<|im_start|>", "x", " "])) if draw(st.booleans()) \
            else draw(st.text(max_size=4))
    if kind == "output":
        return "{{ " + draw(expressions(2)) + draw(st.sampled_from([" }}", " -}}"]))
    if kind == "set":
        return f"{left} set {draw(st.sampled_from(['x', 'y', 'message']))} = {draw(expressions(1))} {right}"
    if kind == "nsset":
        return f"{left} set ns = namespace(x={draw(expressions(0))}) {right}" if draw(st.booleans()) \
            else f"{left} set ns.x = {draw(expressions(1))} {right}"
    if kind in ("break", "continue"):
        return f"{left} {kind} {right}"
    if kind == "for":
        target = draw(st.sampled_from(["message", "x", "k, v", "tool"]))
        source = draw(st.sampled_from(["messages", "tools", "range(3)", "message.items()", "x", "messages | reverse",
                                       "'ab'", "tools | default([])"]))
        condition = f" if {draw(expressions(0))}" if draw(st.integers(0, 3)) == 0 else ""
        otherwise = f"{left} else {right}{inner(in_loop)}" if draw(st.integers(0, 3)) == 0 else ""
        return f"{left} for {target} in {source}{condition} {right}{inner(True)}{otherwise}{left} endfor {right}"
    if kind == "if":
        elifs = "".join(f"{left} elif {draw(expressions(1))} {right}{inner()}" for _ in range(draw(st.integers(0, 1))))
        otherwise = f"{left} else {right}{inner()}" if draw(st.booleans()) else ""
        return f"{left} if {draw(expressions(1))} {right}{inner()}{elifs}{otherwise}{left} endif {right}"
    if kind == "macro":
        body = inner(False)
        return f"{left} macro m(a, b=1) {right}{body}{{{{ a }}}}{left} endmacro {right}{{{{ m({draw(expressions(1))}) }}}}"
    if kind == "filter":
        return f"{left} filter {draw(st.sampled_from(['upper', 'trim', 'indent(1)']))} {right}{inner()}{left} endfilter {right}"
    return f"{left} raw {right}{{{{ x }}}}{left} endraw {right}"


templates = st.lists(blocks(2), max_size=4).map("".join)

PIECES = ["{{", "}}", "{%", "%}", "{%-", "-%}", "{#", "#}", "for", "in", "endfor", "if", "elif", "else", "endif",
          "set", "macro", "endmacro", "call", "endcall", "raw", "endraw", "namespace(", "messages", "message", "[",
          "]", "(", ")", "|", "tojson", ".", "'", '"', " ", "~", "+", "*", "1", "loop", "not", "is", "defined",
          "__class__", "\n", "x", "=", ",", ":", "break", "continue", "block", "extends", "include", "import"]
template_soup = st.lists(st.sampled_from(PIECES) | st.text(max_size=2), max_size=30).map(" ".join)

# --- properties --------------------------------------------------------------------------------------


def render(source: str, conversation, offered) -> str | None:
    try:
        template = ChatTemplate(source)
    except TemplateError:
        return None
    try:
        text = template.render(conversation, tools=offered)
    except TemplateError:
        return None
    assert isinstance(text, str)
    return text


@fuzz_settings(300)
@given(st.text(max_size=40) | template_soup, messages, tools)
@example("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", [], None)
@example("{% if 1 %}" * 200 + "{% endif %}" * 200, [], None)
@example("{{ 1 / 0 }}", [], None)
@example("{{ 'a' + 1 }}", [], None)
@example("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}], None)
@example("{{ range(10 ** 9) }}", [], None)
@example("{% extends 'base' %}", [], None)
@example("{% include 'x' %}", [], None)
def test_arbitrary_sources_render_or_raise_template_error(source, conversation, offered):
    with time_limit(LIMIT_S):
        render(source, conversation, offered)


@fuzz_settings(300)
@given(templates, messages, tools)
@example("{% for k, v in messages %}{% else %}{% endfor %}", [{"role": "user", "content": "x"}], None)
@example("{% set x = messages is odd %}", [], None)
@example("{{ message | tojson }}", [], None)
@example("{% set x = none[1:] %}", [], None)
@example("{% set x = cycler(1, 2).next() | last %}", [], None)
@example("{{ messages[0]['content'] | tojson }}", [{"role": "user", "content": float("nan")}], None)
def test_structured_templates_render_or_raise_template_error(source, conversation, offered):
    with time_limit(LIMIT_S):
        render(source, conversation, offered)


# --- the sandbox -------------------------------------------------------------------------------------

INTERNALS = ("<class", "module", "function", "built-in", "method", "<frame", "<code")

KNOWN_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ range.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ strftime_now.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ config.__class__.__init__.__globals__ }}",
    "{{ messages.__class__ }}",
    "{{ dict.mro() }}",
    "{{ dict.__subclasses__() }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ (''|attr('__class__')).mro() }}",
    "{{ '{0.__class__}'.format(messages) }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '{0.upper}'.format('a') }}",
    "{{ '{0.items}'.format({}) }}",
    "{{ '{0}'.format(lipsum) }}",
    "{{ '{}'.format_map({}) }}",
    "{{ '%s' % lipsum }}",
    "{{ '%s' % (cycler,) }}",
    "{{ '%r' % namespace }}",
    "{{ lipsum ~ '' }}",
    "{{ cycler }}", "{{ joiner }}", "{{ namespace }}", "{{ lipsum }}", "{{ range }}", "{{ dict }}",
    "{{ raise_exception }}", "{{ strftime_now }}",
    "{{ lipsum|string }}", "{{ [lipsum] }}", "{{ {'a': dict} }}", "{{ lipsum|pprint }}", "{{ [cycler]|join }}",
    "{{ dict.fromkeys }}", "{{ ''.join }}", "{{ 'a'.upper }}", "{{ messages.copy }}", "{{ messages.index }}",
    "{{ {}.items }}", "{{ (messages|first).get }}", "{{ loop }}",
    "{% for m in messages %}{{ loop.cycle }}{{ loop.changed }}{% endfor %}",
    "{% for m in messages %}{{ loop.__class__ }}{% endfor %}",
    "{{ cycler(1, 2).next }}", "{{ cycler(1, 2).__class__ }}", "{{ joiner().__call__ }}",
    "{{ namespace(a=1).__class__ }}", "{{ namespace(a=lipsum) }}",
    "{{ ''.__class__.__base__.__subclasses__()[0].__init__.__globals__['sys'].modules['os'] }}",
    "{{ messages|attr('__class__') }}", "{{ messages|map(attribute='__class__')|list }}",
    "{{ messages|selectattr('__class__')|list }}", "{{ messages|sort(attribute='__class__') }}",
    "{{ (messages|first)|attr('items') }}", "{{ ''|attr('format') }}",
    "{{ self }}", "{{ self.__dict__ }}",
    "{% macro m() %}{{ caller }}{{ caller.__class__ }}{% endmacro %}{% call m() %}x{% endcall %}",
    "{% set x = namespace %}{{ x }}", "{% set f = ''.join %}{{ f }}", "{% set f = lipsum %}{{ f ~ '' }}",
    "{{ ''.__class__.mro()[1] }}", "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ 'x'.__mod__ }}", "{{ tojson.__globals__ }}", "{{ messages.pop() }}", "{{ messages.append(1) }}",
    "{{ 1.__class__ }}", "{{ (1).__class__ }}", "{{ (1).real.__class__ }}", "{{ gi_frame }}",
    "{{ (messages|map('string')).gi_frame }}", "{{ (messages|map('string')).gi_frame.f_globals }}",
    "{{ (messages|map('string')).gi_code }}",
]

OBJECTS = ["''", "[]", "{}", "()", "1", "messages", "messages[0]", "cycler", "joiner", "namespace", "lipsum",
           "range", "dict", "self", "raise_exception", "strftime_now", "cycler(1)", "joiner()", "namespace(a=1)",
           "(messages|map('upper'))", "(messages|first)", "tools"]
NAMES = ["__class__", "__mro__", "__subclasses__", "__globals__", "__builtins__", "__init__", "__dict__", "mro",
         "format", "format_map", "__base__", "__bases__", "gi_frame", "gi_code", "f_globals", "__self__", "__func__",
         "__code__", "_TemplateReference__context", "environment", "_module", "__getattribute__", "__reduce_ex__",
         "fromkeys", "items", "copy", "upper", "join", "next", "cycle", "os", "sys", "__call__", "__closure__",
         "func_globals", "__name__", "__qualname__", "__module__"]


@st.composite
def payloads(draw) -> str:
    expression = draw(st.sampled_from(OBJECTS))
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(NAMES))
        style = draw(st.sampled_from(["attr", "item", "filter", "call"]))
        if style == "attr":
            expression = f"{expression}.{name}"
        elif style == "item":
            expression = f"{expression}['{name}']"
        elif style == "filter":
            expression = f"({expression}|attr('{name}'))"
        else:
            expression = f"{expression}.{name}()"
    show = draw(st.sampled_from(["{{ %s }}", "{{ %s ~ '' }}", "{{ %s|string }}", "{{ [%s] }}", "{{ '%%s' %% (%s,) }}",
                                 "{{ '{0}'.format(%s) }}", "{{ %s|pprint }}", "{{ %s|tojson }}", "{{ {'k': %s} }}",
                                 "{%% set v = %s %%}{{ v }}", "{{ namespace(v=%s) }}", "{{ %s|list }}"]))
    return show % expression


def assert_nothing_internal(source: str) -> None:
    conversation = [{"role": "user", "content": "hi"}]
    try:
        text = ChatTemplate(source).render(conversation, tools=[{"type": "function"}])
    except TemplateError:
        return
    for marker in INTERNALS:
        assert marker not in text, f"{source!r} rendered {text!r}"


@pytest.mark.parametrize("source", KNOWN_PAYLOADS)
def test_known_sandbox_escapes_are_refused(source):
    with time_limit(LIMIT_S):
        assert_nothing_internal(source)


@fuzz_settings(300)
@given(payloads())
def test_generated_sandbox_escapes_are_refused(source):
    with time_limit(LIMIT_S):
        assert_nothing_internal(source)


def test_the_sandbox_still_lets_templates_work():
    source = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
              "{{ m['role'] | upper }}:{{ m.content.strip() }};{{ loop.cycle('a', 'b') }}{% endfor %}"
              "{{ ns.n }}{{ '{0}-{1}'.format(1, 'x') }}{{ '%s!' % 'y' }}{{ dict(a=1) | tojson }}"
              "{{ messages | map(attribute='role') | join(',') }}{{ range(2) | list }}")
    text = ChatTemplate(source).render([{"role": "user", "content": " a "}, {"role": "assistant", "content": "b"}])
    assert text == 'USER:a;aASSISTANT:b;b21-xy!{"a": 1}user,assistant[0, 1]'


# --- operations that no timeout can stop --------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = '%s%s' % (ns.s, ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = '{0}{0}'.format(ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s.join([ns.s, ns.s]) %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s.replace('a', ns.s) %}{% endfor %}",
    "{{ 'x'.center(10 ** 10) }}", "{{ 'x'.ljust(10 ** 10) }}", "{{ 'x'.zfill(10 ** 10) }}",
    "{{ 'x'|center(10 ** 10) }}", "{{ 'x\ny'|indent(10 ** 10) }}", "{{ '%10000000000d' % 1 }}",
    "{{ '%.10000000000f' % 1 }}", "{{ '{:10000000000}'.format(1) }}", "{{ '%10000000000d'|format(1) }}",
    "{{ '\t'.expandtabs(10 ** 10) }}", "{{ ('\t' * 4096).expandtabs(4096) }}", "{{ 'x'.rjust(10 ** 10) }}",
    "{{ [1]|batch(10 ** 10, 0)|list }}", "{{ [1]|slice(10 ** 10)|list }}", "{{ ([[1]] * 100000)|sum(start=[]) }}",
    "{{ ('a' * 4096).replace('a', 'b' * 4096) }}", "{{ ('a' * 4096)|replace('a', 'b' * 4096) }}",
    "{{ ('\n' * 4096)|indent(4096) }}", "{{ ('b' * 4096).join(['a'] * 4096) }}",
    "{{ (['a'] * 4096)|join('b' * 4096) }}",
    "{{ 'a'.translate({97: 'b' * 4096}) if false }}{{ ('a' * 4096).translate({97: 'b' * 4096}) }}",
    "{{ '%s' * 300 % ((('x' * 10000),) * 300) }}", "{{ ('{0}' * 300).format('x' * 10000) }}",
    "{% set ns = namespace(n=3) %}{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "{{ (7 ** 100000) // (3 ** 60000) }}",
])
def test_a_growing_value_is_refused_before_it_exhausts_memory(source, monkeypatch):
    monkeypatch.setattr(chat_template, "MAX_OPERATION_SIZE", 1 << 20)
    with time_limit(LIMIT_S), pytest.raises(TemplateError, match="larger than the template limit"):
        ChatTemplate(source).render([])
