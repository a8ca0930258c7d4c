"""Templates are programs (issue 16, item 9): a runaway one must neither freeze the server nor keep
a thread busy after its request is gone."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from a3s_power.prompt import bounded
from a3s_power.prompt.chat_template import ChatTemplate, TemplateError
from a3s_power.prompt.gotemplate import GoTemplate
from tests.server_harness import RunningServer, resolver, server_config
from tests.tiny_models import write_tiny_llama

RUNAWAY_GO = "{{range 100000}}{{range 100000}}{{end}}{{end}}{{.Prompt}}"
# Loops as long as the message says: the shape of a hostile GGUF chat template.
RUNAWAY_JINJA = ("{% for i in range(messages[0]['content'] | int) %}{% for j in range(messages[0]['content'] | int) %}"
                 "{% endfor %}{% endfor %}{{ messages[0]['content'] }}")


def _renders() -> int:
    return sum(t.name == "a3s-render" for t in threading.enumerate())


def _wait(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    hostile = write_tiny_llama(tmp_path_factory.mktemp("hostile") / "hostile.gguf", chat_template=RUNAWAY_JINJA)
    srv = RunningServer(server_config(num_parallel=2, context_length=512),
                        resolver(smollm2=smollm2_path, hostile=str(hostile))).start()
    yield srv
    srv.stop()


def test_a_runaway_go_template_neither_freezes_the_server_nor_runs_on(server, monkeypatch):
    monkeypatch.setattr(bounded, "RENDER_TIMEOUT_S", 2.0)
    result = {}

    def runaway():
        result["r"] = requests.post(server.url + "/api/generate", timeout=60, json={
            "model": "smollm2", "prompt": "hi", "template": RUNAWAY_GO, "stream": False})

    caller = threading.Thread(target=runaway)
    caller.start()
    assert _wait(lambda: _renders() > 0, 10)
    for _ in range(5):  # the event loop answers while the template runs
        started = time.monotonic()
        assert requests.get(server.url + "/api/version", timeout=5).ok
        assert time.monotonic() - started < 1.0
    caller.join(30)
    r = result["r"]
    assert r.status_code == 400 and "took longer than 2s" in r.json()["error"]
    assert _wait(lambda: _renders() == 0, 5)  # stopped, not left running


def test_an_abandoned_render_stops_with_its_request(server):
    """A hostile GGUF chat template, seven requests abandoned by their clients: no render goes on."""
    for n in range(7):
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(server.url + "/api/chat", timeout=(5, 0.5), json={
                "model": "hostile", "messages": [{"role": "user", "content": "100000"}], "stream": False})
    assert _wait(lambda: _renders() == 0, 5)
    # Nothing renders on: this process (server included) is idle again.
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.5
    started = time.monotonic()
    assert requests.get(server.url + "/api/ps", timeout=5).ok
    assert time.monotonic() - started < 1.0


def test_the_hostile_template_still_renders_small_inputs(server):
    r = requests.post(server.url + "/api/chat", timeout=60, json={
        "model": "hostile", "messages": [{"role": "user", "content": "3"}], "stream": False,
        "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["done"]


@pytest.mark.parametrize("source", ["{{ 'x' * 100000000000 }}", "{{ 10 ** 100000000 }}",
                                    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"])
def test_jinja_operations_that_no_timeout_could_stop_are_refused(source):
    with pytest.raises(TemplateError):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("source", ['{{printf "%0999999999d" 1}}', "{{range 1000000000}}xxxxxxxxxxxxxxxx{{end}}"])
def test_go_output_is_capped(source, monkeypatch):
    from a3s_power.prompt.gotemplate import funcs

    monkeypatch.setattr(funcs, "MAX_OUTPUT", 1 << 20)
    with pytest.raises(TemplateError):
        GoTemplate(source).render({})
