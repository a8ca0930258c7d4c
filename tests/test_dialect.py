"""Ollama's own GGUF dialect (store/dialect): each family's dialect file, translated, must give the
same greedy tokens as the same weights written as llama.cpp writes them; the blob is untouched."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import ollama
import pytest
import requests

from a3s_power.core import _core
from a3s_power.store import dialect
from a3s_power.store.blobs import TEMP_PREFIX as TEMP
from a3s_power.store.gguf import read_gguf
from tests import dialect_models
from tests.conftest import collect, context_params, greedy
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_projector import bmp_image

PROMPT = "the cat sat on the mat and then"
N_TOKENS = 12


def greedy_tokens(path: Path, projector: Path | None = None) -> list[int]:
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(path), params)
    try:
        engine = _core.Engine(model, context_params(n_ctx=256))
        try:
            rid = engine.submit(model.tokenize(PROMPT, True, True),
                                _core.GenerateParams(sampling=greedy(), num_predict=N_TOKENS))
            return collect(engine, [rid])[rid].tokens
        finally:
            engine.close()
    finally:
        model.close()


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def pull_and_chat_with_an_image(home: Path, repository: str, blob: bytes, family: str, template: str,
                                image_positions: int) -> None:
    """The whole path for a vision family: the registry serves Ollama's one blob (with a Go
    TEMPLATE), the real server pulls it, keeps the blob as served, reports vision, and answers a
    chat with an image through the translated projector, whose ``image_positions`` reach the prompt."""
    config = {"model_format": "gguf", "model_family": family, "model_type": "tiny", "file_type": "F32"}
    with FakeRegistry() as reg, ServerThread(home) as server:
        reg.add_model(repository, "tiny", [("application/vnd.ollama.image.model", blob),
                                           ("application/vnd.ollama.image.template", template.encode())],
                      config=json.dumps(config).encode())
        name = f"{reg.host}/{repository}:tiny"
        r = requests.post(server.url + "/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
        assert sha256(server.store.resolve(name).model_path) == "sha256:" + hashlib.sha256(blob).hexdigest()

        show = requests.post(server.url + "/api/show", json={"model": name}).json()
        assert "vision" in show["capabilities"] and "completion" in show["capabilities"]

        def chat(images):
            message = {"role": "user", "content": "What is in this picture?", **({"images": images} if images else {})}
            return requests.post(server.url + "/api/chat", json={
                "model": name, "messages": [message], "stream": False,
                "options": {"temperature": 0, "num_predict": 8}})

        r = chat([base64.b64encode(bmp_image(40, 24)).decode()])
        assert r.status_code == 200, r.text
        with_image = r.json()
        assert with_image["done"] is True and with_image["message"]["role"] == "assistant"
        without = chat(None).json()
        assert with_image["prompt_eval_count"] >= without["prompt_eval_count"] + image_positions
        assert list(home.rglob("projector.gguf"))  # the derived projector is what ran


def translate(path: Path, store_root: Path) -> dict[str, Path]:
    translation = dialect.detect(read_gguf(path, max_array=0, check_size=False))
    assert translation is not None and translation.dialect is not None
    return dialect.ensure(path, sha256(path), store_root, translation)


PAIRS = {"gptoss": dialect_models.gptoss_pair, "lfm2": dialect_models.lfm2_pair}


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_translated_dialect_gives_the_same_greedy_tokens(tmp_path, family):
    upstream, ollama = PAIRS[family]()
    ref = upstream.write(tmp_path / "upstream.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    assert dialect.detect(read_gguf(ref, max_array=0, check_size=False)) is None  # llama.cpp's own: as it is
    with pytest.raises(Exception):  # what the translation is for: llama.cpp refuses the dialect
        greedy_tokens(blob)
    before = sha256(blob)
    files = translate(blob, tmp_path / "store")
    assert sha256(blob) == before  # the blob is never touched
    expected = greedy_tokens(ref)
    assert len(expected) > 0
    assert greedy_tokens(files["model"]) == expected


def test_translation_is_made_once_and_kept_by_digest(tmp_path):
    _, ollama = dialect_models.gptoss_pair()
    blob = ollama.write(tmp_path / "ollama.gguf")
    first = translate(blob, tmp_path / "store")
    mtime = first["model"].stat().st_mtime_ns
    again = translate(blob, tmp_path / "store")
    assert again == first and first["model"].stat().st_mtime_ns == mtime
    assert first["model"].parent.name.endswith(f".v{dialect.TRANSLATOR_VERSION}")
    dialect.remove_for(tmp_path / "store", sha256(blob))
    assert not first["model"].parent.exists()


def test_an_untranslatable_dialect_names_its_architecture(tmp_path):
    upstream, _ = dialect_models.lfm2_pair()
    odd = upstream.copy()
    odd.arch = "mystery"
    odd.set("general.architecture", "mystery", dialect_models.GT.STRING)
    odd.tensors["v.patch_embd.weight"] = odd.tensors["token_embd.weight"][:4]
    path = odd.write(tmp_path / "odd.gguf")
    with pytest.raises(dialect.UnsupportedDialect, match='"mystery"'):
        dialect.detect(read_gguf(path, max_array=0, check_size=False))


def test_pull_translates_and_the_server_runs_the_dialect(tmp_path):
    """Pulled from a registry as Ollama's library serves it: translated right after the pull (with
    progress), served, pushed back byte for byte, and the translation removed with the blob."""
    upstream, ollama_form = dialect_models.gptoss_pair()
    data = ollama_form.write(tmp_path / "blob.gguf").read_bytes()
    with FakeRegistry() as reg, ServerThread(tmp_path / "home") as server:
        reg.add_model("library/gpt-oss", "tiny", [("application/vnd.ollama.image.model", data),
                                                  ("application/vnd.ollama.image.template", b"{{ .Prompt }}")])
        name = f"{reg.host}/library/gpt-oss:tiny"
        client = ollama.Client(host=server.url)
        lines = list(client.pull(name, insecure=True, stream=True))
        assert lines[-1].status == "success"
        translating = [line for line in lines if line.status.startswith("translating")]
        assert translating and translating[-1].completed == translating[-1].total
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        folder = dialect.derived_dir(server.store.root, digest)
        assert (folder / "model.gguf").is_file()

        out = client.generate(model=name, prompt=PROMPT, options={"temperature": 0, "num_predict": 8})
        assert out.done and out.eval_count > 0
        assert server.store.blobs.path(digest).read_bytes() == data  # the blob is the original

        client.copy(name, f"{reg.host}/someone/oss:1")
        client.push(f"{reg.host}/someone/oss:1", insecure=True)
        pushed = json.loads(reg.manifests[("someone/oss", "1")])  # the original blob, not the translation
        assert [layer["digest"] for layer in pushed["layers"] if layer["mediaType"].endswith("model")] == [digest]
        client.delete(name)
        client.delete(f"{reg.host}/someone/oss:1")
        assert not folder.exists()


def test_a_killed_translation_leaves_nothing_loadable_and_is_redone(tmp_path):
    """kill -9 half way through writing the derived model: no ``complete.json``, so the next load
    translates again; start-up pruning removes the temporary, and folders of blobs that are gone."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from a3s_power.store import ModelStore

    upstream, ollama_form = dialect_models.gptoss_pair(n_embd=256, n_layer=8, n_ff_exp=512)
    blob = ollama_form.write(tmp_path / "blob.gguf")
    store = ModelStore(tmp_path / "models")
    digest, _ = store.blobs.import_file(blob)
    code = textwrap.dedent(f"""
        from pathlib import Path
        import importlib, time
        from a3s_power.store import dialect as d
        from a3s_power.store.gguf import read_gguf
        w = importlib.import_module("a3s_power.store.dialect.write")
        slow = w._copy_range
        def crawl(*a):  # slow enough to be killed in the middle
            time.sleep(0.05)
            slow(*a)
        w._copy_range = crawl
        blob = Path({str(store.blobs.path(digest))!r})
        t = d.detect(read_gguf(blob, max_array=0, check_size=False))
        print("start", flush=True)
        d.ensure(blob, {digest!r}, Path({str(store.root)!r}), t)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    folder = dialect.derived_dir(store.root, digest)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(TEMP in p.name for p in folder.glob("*")):
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "complete.json").exists() and not (folder / "model.gguf").exists()
    assert any(TEMP in p.name for p in folder.iterdir())

    with store.pinned([digest]):  # a blob some model uses
        removed = store.prune(grace_s=0)
    assert any(TEMP in r for r in removed) and not any(TEMP in p.name for p in folder.iterdir())
    files = translate(store.blobs.path(digest), store.root)  # redone whole
    assert greedy_tokens(files["model"]) == greedy_tokens(upstream.write(tmp_path / "upstream.gguf"))

    stale = dialect.derived_root(store.root) / f"{folder.name.rpartition('.v')[0]}.v0"
    stale.mkdir()
    store.blobs.remove(digest)
    store.prune(grace_s=0)
    assert not folder.exists() and not stale.exists()
