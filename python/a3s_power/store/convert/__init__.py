"""Converting a Hugging Face model folder (config.json, *.safetensors, a tokenizer) to GGUF, without torch.

``convert_model`` is what ``create`` runs for ``FROM <folder>`` or for ``files`` holding SafeTensors:

* ``reader``: the checkpoint's tensors, read a slice of rows at a time;
* ``tokenizer``: BPE, SentencePiece or WordPiece, special tokens and the chat template;
* ``families``: per family, the architecture, hyperparameters, tensor names and fixes;
* ``writer``: the GGUF file, tensor by tensor.

Families: llama, mistral, qwen2, gemma3 (text), phi3, bert. Matrices are written in F16 (BF16 when
the checkpoint is BF16), vectors and norms in F32; ``create``'s ``quantize`` then applies as for any
F16 model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .errors import ConvertCancelled, ConvertError
from .families import BF16, SUPPORTED, family_for, plan_tensors
from .reader import read_checkpoint, safetensors_files
from .tokenizer import load_vocab
from .writer import write_gguf

__all__ = ["ConvertCancelled", "ConvertError", "ConvertResult", "SUPPORTED", "check_config", "convert_model",
           "is_model_dir", "model_files"]

# Files of a model folder that the conversion may read (besides the SafeTensors themselves).
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                "special_tokens_map.json", "generation_config.json", "added_tokens.json", "chat_template.jinja",
                "chat_template.json", "modules.json", "model.safetensors.index.json", "sentence_bert_config.json",
                "config_sentence_transformers.json")


@dataclass
class ConvertResult:
    family: str
    architecture: str
    tensors: int
    parameters: int
    file_type: str
    vocab_size: int


def is_model_dir(path: Path) -> bool:
    """A Hugging Face model folder: config.json beside at least one .safetensors file."""
    try:
        return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    except OSError:
        return False


def model_files(path: Path) -> list[str]:
    """The folder's files a conversion needs, relative to it (what the CLI uploads, as Ollama's does):
    the SafeTensors, the configuration and tokenizer files, and the pooling module's config.json."""
    found = [p.name for p in safetensors_files(path)]
    found += [name for name in CONFIG_FILES if (path / name).is_file()]
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        modules = []
    for m in modules if isinstance(modules, list) else []:
        sub = m.get("path") if isinstance(m, dict) else None
        if sub and "/" not in sub and ".." not in sub and (path / sub / "config.json").is_file():
            found.append(f"{sub}/config.json")
    return list(dict.fromkeys(found))


def _read_config(model_dir: Path) -> dict:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvertError("the model folder has no config.json") from None
    except (OSError, ValueError) as exc:
        raise ConvertError(f"config.json is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConvertError("config.json is not a JSON object")
    return config


def check_config(path: Path) -> str:
    """The family a config.json names, or ConvertError: a request is refused before any work starts."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConvertError("config.json is missing or not readable JSON") from None
    if not isinstance(config, dict):
        raise ConvertError("config.json is not a JSON object")
    return family_for(config)[0].name


def convert_model(model_dir: Path, out: Path, *, progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> ConvertResult:
    """Writes the GGUF form of ``model_dir`` to ``out``; ``progress(done, total)`` in bytes written."""
    config = _read_config(model_dir)
    fam, cfg = family_for(config)
    sources = read_checkpoint(model_dir)
    vocab = load_vocab(model_dir, kind=fam.tokenizer)
    if fam.add_space_prefix is not None and vocab.model == "llama":
        vocab.add_space_prefix = fam.add_space_prefix
    if fam.tokenizer == "wordpiece":
        vocab.extra["token_type_count"] = int(cfg.get("type_vocab_size", 1))
    tensors = plan_tensors(fam, cfg, sources, len(vocab))
    embd = next(t for t in tensors if t.name == "token_embd.weight")
    if embd.shape[0] > len(vocab):
        vocab.pad_to(embd.shape[0])
    elif embd.shape[0] < len(vocab):
        raise ConvertError(f"the tokenizer has {len(vocab)} tokens but the embedding only {embd.shape[0]} rows")

    writer = gguf.GGUFWriter(None, fam.arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    name = str(config.get("_name_or_path") or model_dir.name).rstrip("/").rsplit("/", 1)[-1]
    if name:
        writer.add_name(name)
    assert fam.hparams is not None
    fam.hparams(fam, cfg, writer, model_dir)
    bf16 = any(t.qtype == BF16 for t in tensors)
    file_type = gguf.LlamaFileType.MOSTLY_BF16 if bf16 else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    vocab.write(writer)
    write_gguf(out, writer, tensors, progress=progress, cancel=cancel)
    params = sum(int(np.prod(t.shape, dtype=np.int64)) for t in tensors)
    return ConvertResult(fam.name, fam.arch_name, len(tensors), params, "BF16" if bf16 else "F16", len(vocab))


def main(argv: list[str] | None = None) -> int:
    """``python -m a3s_power.store.convert DIR OUT.gguf``: the conversion alone, for measuring it."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        result = convert_model(args.model_dir, args.out)
    except ConvertError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    size = args.out.stat().st_size
    print(f"{result.family} ({result.architecture}): {result.tensors} tensors, {result.parameters} parameters, "
          f"{result.file_type}, {size / 1e9:.3f} GB in {seconds:.2f} s ({seconds / max(size / 1e9, 1e-9):.2f} s/GB)")
    return 0
