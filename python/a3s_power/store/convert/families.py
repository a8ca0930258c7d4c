"""What each model family needs: its llama.cpp architecture, hyperparameters from config.json, which
checkpoint tensors to keep under which GGUF names, and the fixes some tensors need on the way.

Tensor names go through the ``gguf`` package's map for the architecture
(``gguf.get_tensor_name_map``). The fixes, all facts of how llama.cpp computes each architecture:

* llama, mistral: llama.cpp applies RoPE to adjacent pairs of a head's dimensions, Hugging Face to its
  two halves, so the rows of ``q_proj`` and ``k_proj`` are reordered within each head (K by the number
  of key/value heads). Llama 3's ``rope_scaling`` becomes a ``rope_freqs`` tensor of per-frequency factors.
* gemma3: its RMSNorm scales by ``1 + weight``; llama.cpp's by ``weight``, so 1 is added to every norm.
  The embedding's rows past the tokenizer's vocabulary are dropped; only the text model is converted.
* qwen2, phi3: RoPE on halves, as in llama.cpp (no reordering); phi3's fused ``qkv_proj`` and
  ``gate_up_proj`` are what llama.cpp loads. Phi-3's long-context factors become ``rope_factors_*``.
* bert: not causal, pooling from sentence-transformers' ``modules.json``, token-type embeddings kept;
  the pooler and masked-LM heads are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .errors import ConvertError
from .reader import SourceTensor

Fix = Callable[[np.ndarray, int], np.ndarray]  # (rows of the tensor, index of the first row) -> rows
F32, F16, BF16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16


@dataclass
class OutTensor:
    """One tensor of the GGUF file: where its rows come from and how they change on the way."""

    name: str
    shape: tuple[int, ...]  # numpy order (rows first), as in the checkpoint
    qtype: gguf.GGMLQuantizationType
    source: SourceTensor | None = None
    data: np.ndarray | None = None  # a tensor made here (rope factors), instead of a source
    fix: Fix | None = None
    group: int = 1  # rows are read in multiples of this (a head, for reordering)

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape, dtype=np.int64))
        return n * (4 if self.qtype == F32 else 2)


@dataclass
class Family:
    name: str  # as README and errors name it
    arch: gguf.MODEL_ARCH
    tokenizer: str = "auto"  # load_vocab's kind
    permute_qk: bool = False
    norm_plus_one: bool = False
    trim_embedding: bool = False
    skip_prefixes: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()  # prefix -> prefix, before the map
    add_space_prefix: bool | None = None
    hparams: Callable[[Family, dict, gguf.GGUFWriter, Path], None] | None = None
    extra_tensors: Callable[[dict], list[OutTensor]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _need(cfg: dict, *keys: str) -> Any:
    value = _get(cfg, *keys)
    if value is None:
        raise ConvertError(f"config.json lacks {keys[0]}")
    return value


def rope_parameters(cfg: dict) -> dict:
    """rope_scaling (older configs) or rope_parameters (transformers 5), with rope_theta beside them."""
    rope = dict(cfg.get("rope_scaling") or {})
    rope.update(cfg.get("rope_parameters") or {})
    if "type" in rope and "rope_type" not in rope:
        rope["rope_type"] = rope["type"]
    if "rope_theta" not in rope and cfg.get("rope_theta") is not None:
        rope["rope_theta"] = cfg["rope_theta"]
    return rope


def head_dim(cfg: dict) -> int:
    return int(_get(cfg, "head_dim") or _need(cfg, "hidden_size") // _need(cfg, "num_attention_heads"))


def _common(fam: Family, cfg: dict, w: gguf.GGUFWriter, _dir: Path) -> None:
    w.add_block_count(int(_need(cfg, "num_hidden_layers", "n_layer", "num_layers")))
    if (n_ctx := _get(cfg, "max_position_embeddings", "n_positions")) is not None:
        w.add_context_length(int(n_ctx))
    w.add_embedding_length(int(_need(cfg, "hidden_size", "n_embd")))
    w.add_feed_forward_length(int(_need(cfg, "intermediate_size", "n_inner")))
    n_head = int(_need(cfg, "num_attention_heads", "n_head"))
    w.add_head_count(n_head)
    w.add_head_count_kv(int(_get(cfg, "num_key_value_heads", default=n_head)))
    if cfg.get("head_dim") is not None:
        w.add_key_length(int(cfg["head_dim"]))
        w.add_value_length(int(cfg["head_dim"]))
    if (eps := _get(cfg, "rms_norm_eps")) is not None:
        w.add_layer_norm_rms_eps(float(eps))
    rope = rope_parameters(cfg)
    if rope.get("rope_theta") is not None:
        w.add_rope_freq_base(float(rope["rope_theta"]))
    kind, factor = str(rope.get("rope_type") or "").lower(), rope.get("factor")
    if kind == "linear" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        if rope.get("original_max_position_embeddings"):
            w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


def _llama(fam: Family, cfg: dict, w: gguf.GGUFWriter, d: Path) -> None:
    _common(fam, cfg, w, d)
    w.add_rope_dimension_count(head_dim(cfg))
    w.add_vocab_size(int(_need(cfg, "vocab_size")))


def _llama3_rope_freqs(cfg: dict) -> list[OutTensor]:
    rope = rope_parameters(cfg)
    if str(rope.get("rope_type") or "").lower() != "llama3":
        return []
    base = float(rope.get("rope_theta", 10000.0))
    dim = head_dim(cfg)
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:  # a smooth blend between the two bands
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    data = np.asarray(factors, dtype=np.float32)
    return [OutTensor("rope_freqs.weight", data.shape, F32, data=data)]


def _qwen2(fam: Family, cfg: dict, w: gguf.GGUFWriter, d: Path) -> None:
    _common(fam, cfg, w, d)


def _gemma3(fam: Family, cfg: dict, w: gguf.GGUFWriter, d: Path) -> None:
    defaults = {"max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "head_dim": 256, "rope_theta": 1_000_000.0,
                "num_key_value_heads": 4, "num_attention_heads": 8}  # what Gemma 3's configs may leave out
    cfg = {**defaults, **{k: v for k, v in cfg.items() if v is not None}}
    _common(fam, cfg, w, d)
    if cfg.get("rope_local_base_freq") is not None:
        w.add_rope_freq_base_swa(float(cfg["rope_local_base_freq"]))
    if cfg.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
    if cfg.get("sliding_window_pattern") != 1 and cfg.get("sliding_window"):
        w.add_sliding_window(int(cfg["sliding_window"]))


def _phi3_rope(cfg: dict) -> tuple[int, dict]:
    rope = rope_parameters(cfg)
    n_embd, n_head = int(_need(cfg, "hidden_size")), int(_need(cfg, "num_attention_heads"))
    return int(float(cfg.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0))) * n_embd) // n_head, rope


def _phi3(fam: Family, cfg: dict, w: gguf.GGUFWriter, d: Path) -> None:
    _common(fam, cfg, w, d)
    rope_dims, rope = _phi3_rope(cfg)
    n_ctx = int(_need(cfg, "max_position_embeddings", "n_positions"))
    w.add_rope_scaling_orig_ctx_len(int(cfg.get("original_max_position_embeddings",
                                                rope.get("original_max_position_embeddings", n_ctx))))
    w.add_rope_dimension_count(rope_dims)
    w.add_sliding_window(int(cfg.get("sliding_window") or 0))
    if rope.get("long_factor"):
        orig = float(cfg.get("original_max_position_embeddings", rope.get("original_max_position_embeddings", n_ctx)))
        scale = n_ctx / orig
        kind = str(rope.get("rope_type") or "").lower()
        if kind in ("su", "longrope"):
            attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0
        elif kind == "yarn":
            attn = 0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0
        else:
            raise ConvertError(f"phi3: unsupported rope scaling {kind!r}")
        w.add_rope_scaling_attn_factors(attn)


def _phi3_factors(cfg: dict) -> list[OutTensor]:
    rope_dims, rope = _phi3_rope(cfg)
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long:
        return []
    if not short or len(long) != len(short) or len(long) != rope_dims // 2:
        raise ConvertError(f"phi3: rope long and short factors must have {rope_dims // 2} values each")
    out = []
    for name, values in (("rope_factors_long.weight", long), ("rope_factors_short.weight", short)):
        data = np.asarray(values, dtype=np.float32)
        out.append(OutTensor(name, data.shape, F32, data=data))
    return out


def pooling_type(model_dir: Path) -> gguf.PoolingType | None:
    """sentence-transformers' pooling, from modules.json and the Pooling module's config.json."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise ConvertError("modules.json is not readable JSON") from None
    path = next((m.get("path") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")),
                None)
    if path is None:
        return None
    try:
        pooling = json.loads((model_dir / path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConvertError(f"{path}/config.json (the pooling settings) is missing or not JSON") from None
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if pooling.get("pooling_mode") in modes:
        return modes[pooling["pooling_mode"]]
    raise ConvertError("unsupported pooling: only mean, CLS and last-token pooling are")


def _bert(fam: Family, cfg: dict, w: gguf.GGUFWriter, d: Path) -> None:
    w.add_block_count(int(_need(cfg, "num_hidden_layers")))
    w.add_context_length(int(_need(cfg, "max_position_embeddings")))
    w.add_embedding_length(int(_need(cfg, "hidden_size")))
    w.add_feed_forward_length(int(_need(cfg, "intermediate_size")))
    w.add_head_count(int(_need(cfg, "num_attention_heads")))
    w.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    w.add_causal_attention(False)
    if (pooling := pooling_type(d)) is not None:
        w.add_pooling_type(pooling)


def _llama_like(name: str) -> Family:
    return Family(name, arch=gguf.MODEL_ARCH.LLAMA, permute_qk=True, hparams=_llama, extra_tensors=_llama3_rope_freqs)


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": _llama_like("llama"),
    "MistralForCausalLM": _llama_like("mistral"),
    "Qwen2ForCausalLM": Family("qwen2", gguf.MODEL_ARCH.QWEN2, hparams=_qwen2),
    "Gemma3ForCausalLM": Family("gemma3", gguf.MODEL_ARCH.GEMMA3, norm_plus_one=True, trim_embedding=True,
                                skip_prefixes=("lm_head.",), add_space_prefix=False, hparams=_gemma3),
    "Gemma3ForConditionalGeneration": Family(
        "gemma3", gguf.MODEL_ARCH.GEMMA3, norm_plus_one=True, trim_embedding=True, add_space_prefix=False,
        skip_prefixes=("lm_head.", "vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                       "model.multi_modal_projector."),
        renames=(("language_model.model.", "model."), ("model.language_model.", "model."),
                 ("language_model.lm_head.", "lm_head.")),
        hparams=_gemma3, notes=["text model only: the vision tower is not converted"]),
    "Phi3ForCausalLM": Family("phi3", gguf.MODEL_ARCH.PHI3, hparams=_phi3, extra_tensors=_phi3_factors),
    "BertModel": Family("bert", gguf.MODEL_ARCH.BERT, tokenizer="wordpiece", hparams=_bert,
                        renames=(("bert.", ""),),
                        skip_prefixes=("embeddings.position_ids", "pooler.", "cls.")),
}
FAMILIES["BertForMaskedLM"] = FAMILIES["BertModel"]
FAMILIES["Qwen2Model"] = Family("qwen2", gguf.MODEL_ARCH.QWEN2, hparams=_qwen2, renames=(("", "model."),))
SUPPORTED = sorted({f.name for f in FAMILIES.values()})


def family_for(config: dict) -> tuple[Family, dict]:
    """The family of a config.json, and the hyperparameters to read (a multimodal model's text part)."""
    archs = config.get("architectures") or []
    for arch in archs:
        if arch in FAMILIES:
            fam = FAMILIES[arch]
            cfg = {**config, **(config.get("text_config") or {})} if "text_config" in config else config
            return fam, cfg
    named = ", ".join(archs) or config.get("model_type") or "none named"
    raise ConvertError(f"unsupported architecture {named}: converting from SafeTensors supports "
                       f"{', '.join(SUPPORTED)}")


# --- tensors ----------------------------------------------------------------------------------------

def reorder_for_rope(rows: np.ndarray, head: int) -> np.ndarray:
    """``rows`` holds whole heads of ``head`` rows each; within each, rows (0..h/2-1, h/2..h-1) become
    (0, h/2, 1, h/2+1, ...)."""
    n = rows.shape[0]
    rest = rows.shape[1:]
    return rows.reshape(n // head, 2, head // 2, *rest).swapaxes(1, 2).reshape(rows.shape)


def _rope_fix(head: int) -> Fix:
    return lambda rows, start: reorder_for_rope(rows, head)


def out_type(name: str, shape: tuple[int, ...], source: SourceTensor) -> gguf.GGMLQuantizationType:
    """Vectors, norms and position/token-type tables in F32 (as llama.cpp wants them); matrices in F16,
    or BF16 when the checkpoint is BF16 (its range does not always fit F16)."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") \
            or name in ("position_embd.weight", "token_types.weight"):
        return F32
    return BF16 if source.dtype == "BF16" else F16


def plan_tensors(fam: Family, cfg: dict, sources: dict[str, SourceTensor], n_vocab: int) -> list[OutTensor]:
    if quant := cfg.get("quantization_config"):
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise ConvertError(f"the checkpoint is quantized ({method}): only F32, F16 and BF16 weights can be converted")
    n_layer = int(_need(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    names = gguf.get_tensor_name_map(fam.arch, n_layer)
    n_head = int(_get(cfg, "num_attention_heads", default=1))
    n_head_kv = int(_get(cfg, "num_key_value_heads", default=n_head))
    out: list[OutTensor] = []
    unknown = []
    for hf_name, src in sources.items():
        name = hf_name
        for old, new in fam.renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        if name.startswith(fam.skip_prefixes) or name.endswith((".rotary_emb.inv_freq", ".attention.masked_bias")):
            continue
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        elif name.endswith(".beta"):
            name = name[:-5] + ".bias"
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            unknown.append(hf_name)
            continue
        if src.dtype not in ("F32", "F16", "BF16", "F64"):
            raise ConvertError(f"tensor {hf_name} is {src.dtype}: quantized checkpoints cannot be converted")
        shape = src.shape
        t = OutTensor(gguf_name, shape, out_type(gguf_name, shape, src), src)
        fixes: list[Fix] = []
        if fam.permute_qk and gguf_name.endswith((".attn_q.weight", ".attn_k.weight", ".attn_q.bias",
                                                  ".attn_k.bias")):
            heads = n_head if ".attn_q." in gguf_name else n_head_kv
            if shape[0] % (2 * heads):
                raise ConvertError(f"{hf_name}: {shape[0]} rows do not split into {heads} heads")
            t.group = shape[0] // heads
            fixes.append(_rope_fix(t.group))
        if fam.norm_plus_one and gguf_name.endswith("norm.weight"):
            fixes.append(lambda rows, start: rows + np.float32(1.0))
        if fam.trim_embedding and gguf_name == "token_embd.weight" and shape[0] > n_vocab > 0:
            t.shape = (n_vocab, *shape[1:])
        if fixes:
            def fix(rows: np.ndarray, start: int, fixes=tuple(fixes)) -> np.ndarray:
                for f in fixes:
                    rows = f(rows, start)
                return rows
            t.fix = fix
        out.append(t)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConvertError(f"{fam.name}: tensors with no GGUF name: {shown}")
    if fam.extra_tensors is not None:
        out += fam.extra_tensors(cfg)
    if not any(t.name == "token_embd.weight" for t in out):
        raise ConvertError("the checkpoint has no token embedding")
    return out
