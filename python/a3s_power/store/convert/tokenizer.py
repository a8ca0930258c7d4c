"""The tokenizer of a Hugging Face model folder, in the form llama.cpp reads from GGUF.

Three kinds, as llama.cpp names them in ``tokenizer.ggml.model``:

* ``gpt2``: byte-level BPE from ``tokenizer.json`` (Llama 3, Qwen2, SmolLM, Phi-4): tokens, merges,
  and the pre-tokenizer's name (``tokenizer.ggml.pre``), recognised from the regular expressions of
  ``pre_tokenizer`` since llama.cpp implements each pre-tokenizer by name;
* ``llama``: SentencePiece, from ``tokenizer.model`` (read here: a small protobuf reader, so the
  ``sentencepiece`` package is not needed) or from a SentencePiece-style ``tokenizer.json`` (BPE with
  byte fallback, or Unigram): pieces, scores and types;
* ``bert``: WordPiece from ``tokenizer.json``, in the "phantom space" form llama.cpp expects (a word's
  first piece starts with ``▁``, continuations lose their ``##``).

Special tokens (ids, whether BOS/EOS are added), merges and the chat template are read by the
``gguf`` package's ``SpecialVocab`` from ``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja`` and ``config.json``, as llama.cpp's converter does.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from .errors import ConvertError

log = logging.getLogger(__name__)

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (int(t) for t in (
    gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
    gguf.TokenType.UNUSED, gguf.TokenType.BYTE))
SPACE = "\u2581"  # SentencePiece's visible space

# Pre-tokenizer regular expressions of tokenizer.json, and llama.cpp's name for each.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_KNOWN_SPLITS = {(_LLAMA3,): "llama-bpe", (_QWEN2,): "qwen2", (_GPT2,): "gpt-2"}


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "gpt2", "llama" or "bert"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None
    special: Any = None  # gguf.SpecialVocab
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def pad_to(self, n: int) -> None:
        """Unused placeholder tokens up to ``n``: llama.cpp wants one token per embedding row."""
        for i in range(len(self.tokens), n):
            self.tokens.append(f"[PAD{i}]")
            self.types.append(UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)

    def write(self, w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if (n := self.extra.get("token_type_count")) is not None:
            w.add_token_type_count(n)
        if self.special is not None:
            # Types the writer has no key for (cls) would only be logged and skipped.
            self.special.special_token_ids = {k: v for k, v in self.special.special_token_ids.items()
                                              if hasattr(w, f"add_{k}_token_id")}
            self.special.add_to_gguf(w, quiet=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{path.name} is not readable JSON: {exc}") from None


def looks_special(text: str) -> bool:
    """Added tokens some models forget to mark special (llama.cpp's converter treats them so too)."""
    return (text in ("<pad>", "<mask>") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


# --- SentencePiece's tokenizer.model (a protobuf ModelProto) ----------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; LEN values as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated message")
        yield number, wire, value


@dataclass
class SentencePieceModel:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: int = 1  # 1 unigram, 2 BPE
    add_dummy_prefix: bool = True


def read_sentencepiece(path: Path) -> SentencePieceModel:
    data = path.read_bytes()
    model = SentencePieceModel([], [], [])
    try:
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:  # repeated SentencePiece
                piece, score, kind = "", 0.0, NORMAL
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        (score,) = struct.unpack("<f", v)
                    elif n == 3 and w == 0:
                        kind = v
                model.pieces.append(piece)
                model.scores.append(score)
                model.types.append(kind if 1 <= kind <= 6 else NORMAL)
            elif number == 2 and wire == 2:  # TrainerSpec
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        model.model_type = v
            elif number == 3 and wire == 2:  # NormalizerSpec
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        model.add_dummy_prefix = bool(v)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConvertError(f"tokenizer.model is not a SentencePiece model ({exc})") from None
    if not model.pieces:
        raise ConvertError("tokenizer.model is not a SentencePiece model (no pieces)")
    return model


# --- tokenizer.json ---------------------------------------------------------------------------------

def _pretokenizer_name(tj: dict) -> str:
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    splits = tuple(s.get("pattern", {}).get("Regex", "") for s in steps if s.get("type") == "Split")
    kinds = [s.get("type") for s in steps]
    if splits in _KNOWN_SPLITS:
        return _KNOWN_SPLITS[splits]
    if not splits and "ByteLevel" in kinds:
        byte_level = next(s for s in steps if s.get("type") == "ByteLevel")
        if byte_level.get("use_regex", True):
            digits = [s for s in steps if s.get("type") == "Digits"]
            if digits and digits[0].get("individual_digits"):
                return "smollm"
            if not digits:
                return "gpt-2"
    log.warning("unknown pre-tokenizer %s, using llama.cpp's default", kinds)
    return "default"


def _added_tokens(tj: dict | None) -> list[dict]:
    return [t for t in (tj or {}).get("added_tokens", []) if isinstance(t, dict) and "id" in t and "content" in t]


def _is_spm_json(tj: dict) -> bool:
    model = tj.get("model", {})
    if model.get("type") == "Unigram":
        return True
    decoders = [(tj.get("decoder") or {})]
    decoders += decoders[0].get("decoders", [])
    return model.get("type") == "BPE" and (
        bool(model.get("byte_fallback")) or any(d.get("type") in ("ByteFallback", "Metaspace") for d in decoders))


def _merges(model: dict) -> list[str]:
    merges = model.get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _bpe_from_json(tj: dict, n_vocab: int) -> Vocab:
    vocab: dict[str, int] = tj["model"].get("vocab") or {}
    by_id: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in vocab.items()}
    for t in _added_tokens(tj):
        special = t.get("special") or looks_special(t["content"])
        by_id[t["id"]] = (t["content"], CONTROL if special else USER_DEFINED)
    size = max(n_vocab, max(by_id) + 1 if by_id else 0)
    tokens, types = [], []
    for i in range(size):
        text, kind = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(text)
        types.append(kind)
    return Vocab("gpt2", _pretokenizer_name(tj), tokens, types)


def _wordpiece_from_json(tj: dict, n_vocab: int) -> Vocab:
    vocab: dict[str, int] = tj["model"].get("vocab") or {}
    by_id = {i: t for t, i in vocab.items()}
    special_ids = {t["id"] for t in _added_tokens(tj) if t.get("special")}
    for t in _added_tokens(tj):
        by_id[t["id"]] = t["content"]
    tokens, types = [], []
    for i in range(max(n_vocab, max(by_id) + 1 if by_id else 0)):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in special_ids:
            tokens.append(text)
            types.append(CONTROL)
        else:  # phantom space: llama.cpp's WordPiece marks a word's start, not its continuation
            tokens.append(text[2:] if text.startswith("##") else SPACE + text)
            types.append(NORMAL)
    return Vocab("bert", "default", tokens, types)


def _spm_from_json(tj: dict) -> tuple[list[str], list[float], list[int], bool]:
    """SentencePiece pieces out of a tokenizer.json (Unigram, or BPE with byte fallback)."""
    model = tj["model"]
    if model.get("type") == "Unigram":
        entries = model.get("vocab") or []
        pieces = [str(e[0]) for e in entries]
        scores = [float(e[1]) for e in entries]
    else:
        vocab: dict[str, int] = model.get("vocab") or {}
        pieces = [""] * (max(vocab.values()) + 1 if vocab else 0)
        for t, i in vocab.items():
            pieces[i] = t
        # llama.cpp's SentencePiece BPE merges the pair whose result scores highest: the earlier merge.
        rank: dict[str, int] = {}
        for r, m in enumerate(_merges(model)):
            a, _, b = m.partition(" ")
            rank.setdefault(a + b, r)
        scores = [-float(rank.get(p, len(rank) + i)) if rank else -float(i) for i, p in enumerate(pieces)]
    types = []
    unk = model.get("unk_id")
    for i, p in enumerate(pieces):
        if i == unk or p == model.get("unk_token"):
            types.append(UNKNOWN)
        elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    norm = json.dumps(tj.get("normalizer") or {}) + json.dumps(tj.get("pre_tokenizer") or {})
    add_prefix = '"Prepend"' in norm or '"prepend_scheme": "always"' in norm or '"prepend_scheme": "first"' in norm
    return pieces, scores, types, add_prefix


def _spm_vocab(model_dir: Path, tj: dict | None, n_vocab: int) -> Vocab:
    sp_path = model_dir / "tokenizer.model"
    if sp_path.is_file():
        sp = read_sentencepiece(sp_path)
        pieces, scores, types, add_prefix = sp.pieces, sp.scores, sp.types, sp.add_dummy_prefix
    elif tj is not None:
        pieces, scores, types, add_prefix = _spm_from_json(tj)
    else:
        raise ConvertError("no tokenizer: the folder has neither tokenizer.model nor tokenizer.json")
    pieces, scores, types = list(pieces), list(scores), list(types)

    def put(i: int, text: str, special: bool) -> None:
        while len(pieces) <= i:
            pieces.append(f"[PAD{len(pieces)}]")
            scores.append(-1000.0)
            types.append(UNUSED)
        special = special or looks_special(text)
        if types[i] in (UNKNOWN, BYTE) and pieces[i] == text:
            return
        pieces[i] = text if special else text.replace(SPACE, " ")
        scores[i] = -1000.0
        types[i] = CONTROL if special else USER_DEFINED

    for text, i in (_read_json(model_dir / "added_tokens.json") or {}).items():
        if isinstance(i, int) and isinstance(text, str):
            put(i, text, False)
    # Added tokens: tokenizer_config.json's list is the fuller one (it says which are special).
    config = _read_json(model_dir / "tokenizer_config.json") or {}
    decoder = config.get("added_tokens_decoder") or {}
    added = [{"id": int(k), **v} for k, v in decoder.items()
             if str(k).isdigit() and isinstance(v, dict) and isinstance(v.get("content"), str)]
    for t in added or _added_tokens(tj):
        put(t["id"], t["content"], bool(t.get("special")))
    vocab = Vocab("llama", "default", pieces, types, scores, add_space_prefix=add_prefix)
    vocab.pad_to(n_vocab)
    return vocab


def load_vocab(model_dir: Path, *, kind: str, n_vocab: int = 0) -> Vocab:
    """``kind``: "wordpiece" (bert), "spm" (a SentencePiece model is expected), or "auto" (what the
    files say: tokenizer.model, else tokenizer.json's model)."""
    tj = _read_json(model_dir / "tokenizer.json")
    if tj is not None and not isinstance(tj.get("model"), dict):
        raise ConvertError("tokenizer.json has no model")
    if kind == "wordpiece":
        if tj is None or tj["model"].get("type") != "WordPiece":
            raise ConvertError("a BERT model needs a WordPiece tokenizer.json")
        vocab = _wordpiece_from_json(tj, n_vocab)
    elif (model_dir / "tokenizer.model").is_file() and _sentencepiece_file(model_dir / "tokenizer.model"):
        vocab = _spm_vocab(model_dir, tj, n_vocab)
    elif tj is None:
        raise ConvertError("no tokenizer: the folder has neither tokenizer.model nor tokenizer.json")
    elif _is_spm_json(tj):
        vocab = _spm_vocab(model_dir, tj, n_vocab)
    elif tj["model"].get("type") == "BPE":
        vocab = _bpe_from_json(tj, n_vocab)
    else:
        raise ConvertError(f"unsupported tokenizer: {tj['model'].get('type')}")
    vocab.special = gguf.SpecialVocab(model_dir, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    if vocab.model == "gpt2" and not vocab.special.merges:
        raise ConvertError("tokenizer.json's BPE has no merges")
    return vocab


def _sentencepiece_file(path: Path) -> bool:
    """tokenizer.model is sometimes another format (Llama 3's is tiktoken text): only a protobuf counts."""
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError:
        return False
    return head == b"\x0a"  # field 1 (pieces), length-delimited
