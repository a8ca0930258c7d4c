"""The web page at /ui, in a real browser: Debian's ``chromium`` driven by Selenium through its
``chromedriver``, against a real server (a store holding SmolLM2, a usage log, prices) and the test
registry. The browser tests skip, saying why, where Selenium, Chromium or chromedriver is missing
(``apt-get install chromium chromium-driver``; .ci/run installs them where it can). The HTTP checks
at the top need no browser.

``A3S_UI_SCREENSHOTS=docs python -m pytest tests/test_ui.py`` saves each page's screenshot under
``docs/`` (README shows them). The usage log is seeded with a week of earlier days so the charts show
more than one bar; today's bars come from the requests the tests make.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ollama
import pytest
import requests

from a3s_power.registry import TransferSettings
from a3s_power.usage import UsageLog
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_gptoss import THINK_THEN_ANSWER, write_tiny_gptoss
from tests.tiny_models import write_tiny_llama

MODEL = "smollm2:latest"
THOUGHT, ANSWER = "Let me think about France.", "Paris is the capital of France."  # what the tiny gpt-oss says
PRICES = {"default": {"input": 0.15, "output": 0.6}}
FAST = TransferSettings(backoff_s=0.01, progress_interval_s=0.0, max_retries=1)
SHOTS = os.environ.get("A3S_UI_SCREENSHOTS")  # a folder for the screenshots (docs/ for README)
LONG = 200 if SHOTS else 24  # the answer's length: a screenshot shows a whole one (two cores share the work)


def _chromium() -> tuple[str | None, str | None, str | None]:
    """(browser, driver, why not): the executables, or the reason the browser tests skip."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install '.[test]')"
    browser = os.environ.get("A3S_UI_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("A3S_UI_CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None:
        return None, None, "no Chromium here (apt-get install chromium chromium-driver)"
    if driver is None:
        return None, None, "no chromedriver here (apt-get install chromium-driver)"
    return browser, driver, None


# --- the server ----------------------------------------------------------------------------------


class Served(ServerThread):
    """The test server with `a3s-power serve`'s runner: a client that goes away cancels its handler."""

    def make_runner(self, app):
        from a3s_power.server.serve import make_runner

        return make_runner(app, self.config)



@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_path):
    home = tmp_path_factory.mktemp("ui-home")
    usage = UsageLog(home / "usage.db")
    today = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    for back in range(7, 0, -1):  # a week of earlier days, two models, for the charts
        ts = (today - timedelta(days=back)).timestamp()
        for i in range(3 + back % 4):
            usage.record(MODEL, "chat", 40 + 9 * i, 90 + 13 * back, 900_000_000 + 40_000_000 * back, 0.00007 * (i + 1),
                         ts=ts + i, ttft_ns=(60 + 7 * back + i) * 1_000_000)
        for i in range(1 + back % 3):
            usage.record("qwen2.5-coder:0.5b", "generate", 120 + 11 * i, 150 + 9 * back, 2_600_000_000, 0.0001 * (i + 1),
                         ts=ts + 100 + i, ttft_ns=(140 + 5 * back) * 1_000_000)
    with Served(home, FAST, usage=usage, num_parallel=2, context_length=2048, pricing=PRICES) as srv:
        client = ollama.Client(host=srv.url)
        list(client.create(model="smollm2", files={"model.gguf": client.create_blob(smollm2_path)}, stream=True))
        # A tiny gpt-oss whose crafted weights think, then answer, the same on any CPU.
        oss = write_tiny_gptoss(home / "oss.gguf", THINK_THEN_ANSWER, THOUGHT)
        list(client.create(model="oss", files={"model.gguf": client.create_blob(str(oss))}, stream=True))
        yield srv
    usage.close()


# --- without a browser ---------------------------------------------------------------------------


def test_page_and_assets_are_served_with_a_strict_policy(server):
    assert requests.get(server.url + "/").text == "Ollama is running"
    r = requests.get(server.url + "/ui", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/ui/"
    page = requests.get(server.url + "/ui/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name, kind in (("app.js", "text/javascript"), ("markdown.js", "text/javascript"), ("app.css", "text/css"),
                       ("icon.svg", "image/svg+xml")):
        asset = requests.get(f"{server.url}/ui/{name}")
        assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(kind), name
    # Nothing outside the page's own files: no traversal, no other file of the package.
    for path in ("/ui/ui.py", "/ui/..%2fui.py", "/ui/%2e%2e/app.py", "/ui/../server/ui.py", "/ui/nothing.js"):
        assert requests.get(server.url + path).status_code == 404, path


def test_the_page_fetches_nothing_from_another_origin():
    from a3s_power.server.ui import FILES

    for path in FILES.iterdir():
        text = path.read_text(encoding="utf-8")
        # No CDN, font service or absolute URL to load from: only this origin's /ui/ and API paths.
        for needle in ("//cdn", "googleapis", "unpkg", "jsdelivr", "@import", "<script src=\"http", "fetch('http",
                       'fetch("http', "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert needle not in text, f"{path.name} holds {needle!r}"


def test_with_api_keys_the_page_is_open_and_the_apis_are_not(tmp_path):
    with ServerThread(tmp_path / "home", api_keys=("sekrit",)) as srv:
        assert requests.get(srv.url + "/ui/").status_code == 200
        assert requests.get(srv.url + "/ui/app.js").status_code == 200
        assert requests.get(srv.url + "/api/tags").status_code == 401
        assert requests.get(srv.url + "/ui/../api/tags").status_code == 401
        assert requests.post(srv.url + "/ui/", json={}).status_code == 401
        assert requests.get(srv.url + "/api/tags", headers={"Authorization": "Bearer sekrit"}).status_code == 200


# --- in the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary, driver_path, why = _chromium()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--force-color-profile=srgb"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 30.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_page(driver, server, page: str) -> None:
    if not driver.current_url.startswith(server.url + "/ui/"):
        driver.get(server.url + "/ui/#" + page)
        wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "true", what="the page starts")
    else:
        driver.execute_script("location.hash = arguments[0]", "#" + page)
    wait(driver, lambda d: d.execute_script("return document.body.dataset.page") == page, what=f"the {page} page")


def screenshot(driver, name: str, whole: bool = False) -> None:
    """Saves the page as docs/ui-NAME.png where A3S_UI_SCREENSHOTS says; ``whole``: all of it, not
    just the window."""
    if not SHOTS:
        return
    target = Path(SHOTS)
    target.mkdir(parents=True, exist_ok=True)
    driver.execute_script("document.querySelector('main').scrollTop = 0")
    if whole:
        height = driver.execute_script("return document.querySelector('header').offsetHeight"
                                       " + document.querySelector('main').scrollHeight")
        driver.set_window_size(1280, height + (860 - driver.execute_script("return window.innerHeight")))
        time.sleep(0.3)
    assert driver.save_screenshot(str(target / f"ui-{name}.png"))
    driver.set_window_size(1280, 860)


def page_errors(driver) -> list[str]:
    """What the page's own code logged as an error: exceptions, CSP refusals; not failed requests."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]


def set_option(driver, name: str, value: str) -> None:
    driver.execute_script("const el = document.getElementById(arguments[0]); el.value = arguments[1];"
                          "el.dispatchEvent(new Event('change'))", f"opt-{name}", value)


def send(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = css(driver, "#prompt")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def conversations(driver) -> list[dict]:
    return json.loads(driver.execute_script("return localStorage.getItem('a3s-power:conversations') || '[]'"))


# Records every length the streaming answer's text had, as the page updates it.
WATCH = """
window.seen = [];
new MutationObserver(() => {
  const el = document.querySelector('.message.assistant.streaming .content');
  if (el && el.textContent.length) window.seen.push(el.textContent.length);
}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
"""


def slots_busy(server) -> float:
    text = requests.get(server.url + "/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("power_slots_busy{"))


def choose_model(driver, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait(driver, lambda d: name in [o.get_attribute("value") for o in css_all(d, "#chat-model option")],
         what=f"{name} in the model list")
    Select(css(driver, "#chat-model")).select_by_value(name)


def test_each_page_loads_without_errors(browser, server):
    for page in ("chat", "models", "usage"):
        open_page(browser, server, page)
        assert css(browser, f"#nav-{page}").get_attribute("class") == "active"
        assert css(browser, f"#page-{page}").is_displayed()
    open_page(browser, server, "chat")
    choose_model(browser, MODEL)
    assert "completion" in css(browser, "#chat-model-caps").text
    assert page_errors(browser) == []


def test_chat_streams_an_answer_and_stop_ends_it(browser, server):
    open_page(browser, server, "chat")
    css(browser, "#new-chat").click()
    choose_model(browser, MODEL)
    css(browser, "#toggle-options").click()
    set_option(browser, "num_predict", "1500")
    browser.execute_script(WATCH)
    send(browser, "Tell me a very long story about a dragon who learns to bake bread.")
    wait(browser, lambda d: len(set(d.execute_script("return window.seen"))) >= 4, timeout=60,
         what="the answer arriving in pieces")
    assert css(browser, "#stop").is_displayed() and not css(browser, "#send").is_displayed()
    assert css_all(browser, ".message.assistant.streaming")
    css(browser, "#stop").click()
    wait(browser, lambda d: d.find_elements("css selector", ".message.assistant.stopped"), what="the stopped answer")
    assert css(browser, "#send").is_displayed() and not css(browser, "#stop").is_displayed()
    text = css(browser, ".message.assistant .content").text
    assert text and css(browser, ".message.assistant .stopped-tag").text == "stopped"
    # The server let the request go: no slot is generating, and the text does not grow.
    wait(browser, lambda _: slots_busy(server) == 0, timeout=10, what="the slot freed")
    time.sleep(0.3)
    assert css(browser, ".message.assistant .content").text == text
    stored = conversations(browser)[0]
    assert stored["messages"][0]["role"] == "user" and stored["messages"][1]["stopped"] is True
    assert stored["options"]["num_predict"] == 1500 and stored["messages"][1]["content"]


def test_chat_answer_completes_with_stats_and_is_kept(browser, server):
    open_page(browser, server, "chat")
    css(browser, "#new-chat").click()
    choose_model(browser, MODEL)
    if not css(browser, "#options").is_displayed():
        css(browser, "#toggle-options").click()
    set_option(browser, "num_predict", str(LONG))
    set_option(browser, "temperature", "0")
    set_option(browser, "system", "You are a helpful programming assistant.")
    send(browser, "Write a Python function that adds two numbers, in a code block.")
    wait(browser, lambda d: not d.find_elements("css selector", ".message.streaming")
         and d.find_elements("css selector", ".message.assistant .stats"), timeout=60, what="the finished answer")
    stats = css(browser, ".message.assistant .stats").text
    assert " out" in stats and "tokens/s" in stats
    stored = conversations(browser)
    assert len(stored) == 2
    latest = max(stored, key=lambda c: c["updated"])
    assert latest["system"] == "You are a helpful programming assistant."
    assert latest["options"] == {"temperature": 0, "num_predict": LONG}
    reply = latest["messages"][1]
    assert reply["role"] == "assistant" and reply["content"] and reply["stats"]["eval_count"] <= LONG
    # What the page shows is what the server answered, rendered.
    assert css(browser, ".message.assistant .content").text.strip()
    screenshot(browser, "chat")


def test_thinking_streams_in_folded_above_the_answer(browser, server):
    open_page(browser, server, "chat")
    css(browser, "#new-chat").click()
    choose_model(browser, "oss:latest")
    send(browser, "What is the capital of France?")
    wait(browser, lambda d: not d.find_elements("css selector", ".message.streaming")
         and d.find_elements("css selector", ".message.assistant .stats"), timeout=60, what="the answer")
    thinking = css(browser, ".message.assistant details.thinking")
    assert thinking.get_attribute("open") is None
    assert thinking.find_element("css selector", "summary").text == "Thinking"
    assert thinking.find_element("css selector", ".thinking-body").get_attribute("textContent") == THOUGHT
    assert css(browser, ".message.assistant .content").text == ANSWER
    thinking.find_element("css selector", "summary").click()
    assert css(browser, ".message.assistant .thinking-body").text == THOUGHT
    reply = max(conversations(browser), key=lambda c: c["updated"])["messages"][1]
    assert (reply["thinking"], reply["content"], reply["model"]) == (THOUGHT, ANSWER, "oss:latest")
    choose_model(browser, MODEL)


def test_an_attached_image_goes_with_the_message(browser, server, tmp_path):
    import base64

    # A 1x1 PNG; SmolLM2 has no vision, so the server's refusal shows, after the image was sent.
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    (tmp_path / "dot.png").write_bytes(png)
    open_page(browser, server, "chat")
    css(browser, "#new-chat").click()
    choose_model(browser, MODEL)
    browser.execute_script("document.getElementById('attach').hidden = false")
    css(browser, "#attach").send_keys(str(tmp_path / "dot.png"))
    browser.execute_script("document.getElementById('attach').hidden = true")
    wait(browser, lambda d: d.find_elements("css selector", "#attachments img"), what="the thumbnail")
    send(browser, "What is in this picture?")
    wait(browser, lambda d: d.find_elements("css selector", ".message.assistant .error"), what="the answer")
    assert "image input" in css(browser, ".message.assistant .error").text
    assert css_all(browser, ".message.user .message-images img")  # the picture, shown in the conversation
    assert css_all(browser, "#attachments img") == []
    conv = max(conversations(browser), key=lambda c: c["updated"])
    assert conv["messages"][0]["images"] == [base64.b64encode(png).decode()]
    css(browser, f'#conversations li[data-id="{conv["id"]}"] .conv-delete').click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: not d.find_elements("css selector", f'#conversations li[data-id="{conv["id"]}"]'))


def test_conversations_are_renamed_exported_and_deleted(browser, server):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server, "chat")
    first = css_all(browser, "#conversations li")[0]
    conv_id = first.get_attribute("data-id")
    first.find_element("css selector", ".conv-rename").click()
    box = css(browser, ".conv-rename-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("Adding numbers", Keys.ENTER)
    wait(browser, lambda d: css(d, f'#conversations li[data-id="{conv_id}"] .conv-title').text == "Adding numbers")
    assert next(c for c in conversations(browser) if c["id"] == conv_id)["title"] == "Adding numbers"

    css(browser, f'#conversations li[data-id="{conv_id}"] .conv-title').click()
    css(browser, "#export-chat").click()
    path = browser.downloads / "Adding_numbers.json"
    wait(browser, lambda _: path.is_file() and path.stat().st_size > 0, timeout=10, what="the export")
    exported = json.loads(path.read_text())
    assert exported["id"] == conv_id and [m["role"] for m in exported["messages"]] == ["user", "assistant"]

    before = [c["id"] for c in conversations(browser)]
    other = next(c for c in before if c != conv_id)
    css(browser, f'#conversations li[data-id="{other}"] .conv-delete').click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: len(css_all(d, "#conversations li")) == len(before) - 1, what="the deletion")
    assert [c["id"] for c in conversations(browser)] == [c for c in before if c != other]


def test_untrusted_markdown_is_rendered_never_run(browser, server):
    evil = ("# Title\n\n**bold** and *em* and `<b>code</b>`\n\n<script>window.pwned = 1</script>\n"
            "<img src=x onerror=\"window.pwned = 2\">\n\n[click](javascript:window.pwned=3) "
            "[ok](https://example.org/a?b=1&c=<2>) ![pic](https://example.org/p.png)\n\n"
            "- one\n- two\n  - nested\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n"
            "```python\ndef add(a, b):\n    return a + b  # sum\n```\n\n"
            "```html\n<img src=x onerror=\"window.pwned = 4\">\n```\n")
    conv = {"id": "evil", "title": "Markdown", "model": MODEL, "system": "", "options": {}, "created": 1,
            "updated": 9e15, "messages": [{"role": "user", "content": "<img src=x onerror=\"window.pwned = 5\">"},
                                          {"role": "assistant", "model": MODEL, "content": evil,
                                           "thinking": "<script>window.pwned = 6</script>first, think"}]}
    open_page(browser, server, "chat")
    browser.execute_script("localStorage.setItem('a3s-power:conversations', JSON.stringify("
                           "[arguments[0], ...JSON.parse(localStorage.getItem('a3s-power:conversations'))]))", conv)
    browser.refresh()
    wait(browser, lambda d: d.execute_script("return document.body.dataset.ready") == "true")
    css(browser, '#conversations li[data-id="evil"] .conv-title').click()
    content = css(browser, ".message.assistant .content")
    time.sleep(0.3)
    assert browser.execute_script("return window.pwned") is None
    assert css_all(browser, "#messages script") == [] and css_all(browser, "#messages img") == []
    assert "<script>window.pwned = 1</script>" in content.text
    assert content.find_element("css selector", "h1").text == "Title"
    assert content.find_element("css selector", "strong").text == "bold"
    assert content.find_element("css selector", "p code").text == "<b>code</b>"
    links = {a.text: a.get_attribute("href") for a in content.find_elements("css selector", "a")}
    assert "click" not in links and "[click](javascript:window.pwned=3)" in content.text
    assert links["ok"].startswith("https://example.org/a?b=1")
    assert links["[image: pic]"] == "https://example.org/p.png"  # a link, never loaded
    assert all(a.get_attribute("rel") == "noopener noreferrer nofollow" for a in content.find_elements("css selector", "a"))
    assert [li.text.split("\n")[0] for li in content.find_elements("css selector", "ul > li")][:2] == ["one", "two"]
    assert content.find_element("css selector", "ul ul li").text == "nested"
    assert content.find_element("css selector", "td.align-right").text == "2"
    code = content.find_element("css selector", "code.lang-python")
    assert code.text == "def add(a, b):\n    return a + b  # sum"
    assert [s.text for s in code.find_elements("css selector", ".tok-keyword")] == ["def", "return"]
    assert code.find_element("css selector", ".tok-comment").text == "# sum"
    thinking = css(browser, ".message.assistant details.thinking")
    assert thinking.get_attribute("open") is None  # folded
    assert "window.pwned = 6" in thinking.get_attribute("textContent")
    css(browser, '#conversations li[data-id="evil"] .conv-delete').click()
    browser.switch_to.alert.accept()
    wait(browser, lambda d: not d.find_elements("css selector", '#conversations li[data-id="evil"]'))
    assert page_errors(browser) == []


def test_models_pull_with_progress_show_copy_unload_and_delete(browser, server, tmp_path):
    from selenium.webdriver.common.keys import Keys

    data = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    with FakeRegistry() as reg:
        reg.add_model("library/tiny", "1b", [("application/vnd.ollama.image.model", data),
                                             ("application/vnd.ollama.image.system", b"You are tiny.")])
        reg.faults.throttle_bps = len(data)  # about a second, so the bars move
        name = f"{reg.host}/library/tiny:1b"
        open_page(browser, server, "models")
        browser.execute_script("""
          window.percents = [];
          new MutationObserver(() => document.querySelectorAll('.layer').forEach(
            (l) => window.percents.push(Number(l.dataset.percent)))
          ).observe(document.getElementById('pull-progress'), {subtree: true, attributes: true, childList: true});""")
        css(browser, "#pull-name").send_keys(name)
        css(browser, "#pull-insecure").click()
        css(browser, "#pull-name").send_keys(Keys.ENTER)
        wait(browser, lambda d: css(d, "#pull-status").get_attribute("data-state") == "success", timeout=60,
             what="the pull's success")
        layers = css_all(browser, ".layer")
        assert len(layers) >= 2 and all(layer.get_attribute("data-percent") == "100" for layer in layers)
        assert "100%" in layers[0].text
        percents = browser.execute_script("return window.percents")
        assert any(0 < p < 100 for p in percents), percents  # the bar moved on its way there
        screenshot(browser, "models")
    row = f'#installed tr[data-model="{name}"]'
    wait(browser, lambda d: d.find_elements("css selector", row), what="the pulled model listed")
    assert css(browser, f"{row} td:nth-child(3)").text == "llama"

    css(browser, f"{row} .actions button:nth-child(1)").click()  # Show: the Modelfile
    wait(browser, lambda d: "FROM" in css(d, "#detail-body").text, what="the Modelfile")
    assert "You are tiny." in css(browser, "#detail-body").text
    css(browser, '#model-detail [data-tab="info"]').click()
    wait(browser, lambda d: "general.architecture" in css(d, "#detail-body").text, what="the model info")

    css(browser, f"{row} .actions button:nth-child(2)").click()  # Copy
    prompt = browser.switch_to.alert
    prompt.send_keys("tiny-copy:latest")
    prompt.accept()
    copy_row = '#installed tr[data-model="tiny-copy:latest"]'
    wait(browser, lambda d: d.find_elements("css selector", copy_row), what="the copy listed")

    for target in (row, copy_row):
        css(browser, f"{target} .delete").click()
        browser.switch_to.alert.accept()
        wait(browser, lambda d, t=target: not d.find_elements("css selector", t), what="the model deleted")
    names = [m["name"] for m in requests.get(server.url + "/api/tags").json()["models"]]
    assert name not in names and "tiny-copy:latest" not in names and MODEL in names

    # What is loaded (SmolLM2, from the chats): its slots, and unloading it.
    loaded = f'#loaded tr[data-model="{MODEL}"]'
    wait(browser, lambda d: d.find_elements("css selector", loaded), what="the loaded model")
    assert "CPU" in css(browser, f"{loaded} td:nth-child(3)").text or "GPU" in css(browser, f"{loaded} td:nth-child(3)").text
    assert css(browser, f"{loaded} td:nth-child(5)").text == "0 / 2"
    css(browser, f"{loaded} .unload").click()
    wait(browser, lambda d: not d.find_elements("css selector", loaded), timeout=20, what="the unload")
    assert MODEL not in [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]
    assert page_errors(browser) == []


def test_usage_charts_draw_after_requests(browser, server):
    today = datetime.now(timezone.utc).date().isoformat()
    # One more request, from outside the page, to count on.
    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "Hi", "stream": False,
                                                          "options": {"num_predict": 4}})
    assert r.status_code == 200
    usage = requests.get(server.url + "/v1/usage", params={"start_date": today, "end_date": today}).json()
    requests_today = sum(row["requests"] for row in usage["data"] if row["model"] == MODEL)
    assert requests_today >= 2  # the chat that finished, and this one
    open_page(browser, server, "usage")
    bar = f'svg[data-chart="requests"] rect[data-label="{today}"][data-series="{MODEL}"]'
    wait(browser, lambda d: d.find_elements("css selector", bar), what="today's bar")
    assert float(css(browser, bar).get_attribute("data-value")) == requests_today
    # Drawn as its attributes say (no stylesheet rule resizes the chart's shapes).
    assert browser.execute_script("const r = document.querySelector(arguments[0]);"
                                  "return Math.abs(r.getBBox().height - r.height.baseVal.value) < 0.01", bar)
    # A week of bars, two models; tokens in and out; TTFT, speed and cost drawn.
    assert len(css_all(browser, 'svg[data-chart="requests"] rect.chart-bar')) >= 8
    assert css_all(browser, f'svg[data-chart="tokens"] rect[data-label="{today}"][data-series="{MODEL} · out"]')
    assert css_all(browser, f'svg[data-chart="ttft"] circle[data-label="{today}"][data-series="{MODEL}"]')
    assert css_all(browser, f'svg[data-chart="speed"] circle[data-label="{today}"][data-series="{MODEL}"]')
    assert css_all(browser, f'svg[data-chart="cost"] rect[data-label="{today}"]')
    shown = requests.get(server.url + "/v1/usage", params={"start_date": css(browser, "#usage-start").get_attribute("value"),
                                                           "end_date": today}).json()
    assert css(browser, "#total-requests .card-value").text == f"{shown['totals']['requests']:,}"
    # Live: the queue and busy slots, sampled every two seconds.
    wait(browser, lambda d: len(d.find_elements("css selector", 'svg[data-chart="live"] circle')) >= 4, timeout=10,
         what="the live chart")
    assert css(browser, "#live-queue .card-value").text == "0"
    screenshot(browser, "usage", whole=True)
    # The model filter: only the other model's bars.
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#usage-model")).select_by_value("qwen2.5-coder:0.5b")
    wait(browser, lambda d: not d.find_elements("css selector", bar), what="the filtered chart")
    series = {r.get_attribute("data-series") for r in css_all(browser, 'svg[data-chart="requests"] rect.chart-bar')}
    assert series == {"qwen2.5-coder:0.5b"}
    assert page_errors(browser) == []


def test_the_page_asks_for_the_api_key_and_sends_it(browser, tmp_path):
    with ServerThread(tmp_path / "home", api_keys=("sekrit",)) as srv:
        browser.get(srv.url + "/ui/#models")
        wait(browser, lambda d: css(d, "#key-dialog").get_attribute("open") is not None, what="the key dialog")
        assert "API key" in css(browser, "#key-reason").text
        css(browser, "#key-input").send_keys("sekrit")
        css(browser, "#key-save").click()
        wait(browser, lambda d: css(d, "#installed-empty").is_displayed(), what="the models, with the key")
        assert css(browser, "#key-button").text == "API key ✓"
        assert browser.execute_script("return localStorage.getItem('a3s-power:api-key')") == "sekrit"
        assert css(browser, "#server-version").text.startswith("v")
