"""DeepSeek-OCR as Ollama's converter wrote it: architecture ``deepseekocr``, one blob holding the
language model, both vision encoders and the projector.

llama.cpp calls the language model ``deepseek2-ocr`` (the key prefix follows) and needs three
keys Ollama's converter did not write: the RMS-norm epsilon, the per-expert feed-forward length
and the shared-expert count (both read back from the expert tensors' shapes). The vision side
becomes a ``clip`` projector of type ``deepseekocr``; Ollama's blob has

* the SAM encoder under ``s.`` (llama.cpp: ``v.sam.``), its position embedding and relative
  position tables without the ``.weight`` suffix, ``norm1``/``norm2``/``attn.proj`` where
  llama.cpp reads ``pre_ln``/``post_ln``/``attn.out``;
* the CLIP encoder under ``v.`` with checkpoint leaf names (``self_attn.qkv_proj``,
  ``layer_norm1``, ``mlp.fc1``, ``pre_layrnorm``...);
* the projector as ``mm.layers`` (llama.cpp: ``mm.model.fc``), and the two learned separators
  under ``mm.`` where llama.cpp reads them under ``v.``;
* the convolution kernels and the CLIP position table in F16, which llama.cpp's converter
  stores in F32;
* its own ``deepseekocr.vision.*`` / ``deepseekocr.sam.*`` keys where mtmd reads
  ``clip.vision.*``, and none of the keys llama.cpp's converter adds for the projector.
"""

from __future__ import annotations

from . import Dialect, register
from .plan import ARRAY, FLOAT32, UINT32, Plan

_OLD, _NEW = "deepseekocr.", "deepseek2-ocr."

# Leaf renames inside the vision tensors, applied in order after ``s.`` became ``v.sam.``.
_VISION_RENAMES = (
    # CLIP blocks
    (".self_attn.qkv_proj.", ".attn_qkv."),
    (".self_attn.out_proj.", ".attn_out."),
    (".layer_norm1.", ".ln1."),
    (".layer_norm2.", ".ln2."),
    (".mlp.fc1.", ".ffn_up."),
    (".mlp.fc2.", ".ffn_down."),
    ("v.pre_layrnorm.", "v.pre_ln."),  # the checkpoint's own spelling
    # SAM blocks (their MLP is already mlp.lin1 / mlp.lin2 on both sides)
    (".attn.proj.", ".attn.out."),
    (".norm1.", ".pre_ln."),
    (".norm2.", ".post_ln."),
    # projector
    ("mm.layers.", "mm.model.fc."),
)


def _first(plan: Plan, pattern: str):
    names = plan.names(pattern)
    return plan.tensor(names[0]) if names else None


def _text(plan: Plan) -> None:
    plan.set_str("general.architecture", "deepseek2-ocr")
    plan.rename_prefix(_OLD, _NEW)
    plan.default(_NEW + "attention.layer_norm_rms_epsilon", FLOAT32, 1e-6)  # the checkpoint's value
    # the first MoE block (the leading ones are dense): its down projection's input width is
    # one expert's feed-forward length, the shared experts' is that times their count
    down = _first(plan, r"^blk\.\d+\.ffn_down_exps\.weight$")
    if not plan.has(_NEW + "expert_feed_forward_length") and down is not None:
        plan.set_u32(_NEW + "expert_feed_forward_length", down.shape[0])
    n_ff_exp = plan.get(_NEW + "expert_feed_forward_length")
    shared = _first(plan, r"^blk\.\d+\.ffn_down_shexp\.weight$")
    if not plan.has(_NEW + "expert_shared_count") and shared is not None and n_ff_exp:
        plan.set_u32(_NEW + "expert_shared_count", shared.shape[0] // n_ff_exp)
    # the encoders' keys mean nothing to the language model
    plan.kv = {k: v for k, v in plan.kv.items() if not k.startswith((_NEW + "vision.", _NEW + "sam."))}
    plan.drop_prefix("s.", "v.", "mm.")


def _projector(plan: Plan) -> None:
    def u32(src: str, dst: str) -> None:
        value = plan.get(_OLD + src)
        if value is not None:
            plan.set_u32("clip.vision." + dst, value)

    for src, dst in (("vision.block_count", "block_count"), ("vision.embedding_length", "embedding_length"),
                     ("vision.head_count", "attention.head_count"), ("vision.image_size", "image_size"),
                     ("vision.patch_size", "patch_size"), ("sam.block_count", "sam.block_count"),
                     ("sam.embedding_length", "sam.embedding_length"), ("sam.head_count", "sam.head_count")):
        u32(src, dst)
    plan.become_clip("deepseekocr")
    plan.set_bool("clip.use_gelu", True)  # the SAM MLP's activation; CLIP's is fixed in the graph
    plan.default("clip.vision.attention.layer_norm_epsilon", FLOAT32, 1e-6)
    plan.default("clip.vision.window_size", UINT32, 14)  # SAM's local attention window
    plan.default("clip.vision.image_mean", ARRAY, [0.5, 0.5, 0.5], FLOAT32)  # the checkpoint's preprocessor
    plan.default("clip.vision.image_std", ARRAY, [0.5, 0.5, 0.5], FLOAT32)

    # tensors: SAM moves under v.sam., then leaf names, then the few exact ones
    plan.rename_regex(r"^s\.", "v.sam.")
    plan.rename_tensor("v.sam.position_embd", "v.sam.pos_embd.weight")
    plan.rename_regex(r"\.attn\.rel_pos_([hw])$", r".attn.pos_\1.weight")
    for needle, repl in _VISION_RENAMES:
        plan.rename_containing(needle, repl)
    plan.rename_tensor("mm.image_newline", "v.image_newline")
    plan.rename_tensor("mm.view_seperator", "v.view_seperator")  # sic, as both converters spell it
    sep = plan.tensor("v.view_seperator")
    if sep is not None and len(sep.shape) == 1:
        sep.shape = [sep.shape[0], 1]  # llama.cpp's converter stores it as one row: same bytes
    for name in ("v.sam.patch_embd.weight", "v.patch_embd.weight", "v.position_embd.weight"):
        plan.promote_f32(name)

    # keys mtmd requires that Ollama never wrote, read off the tensors
    up = plan.tensor("v.blk.0.ffn_up.weight")
    if up is not None:
        plan.default("clip.vision.feed_forward_length", UINT32, up.shape[1])
    fc = plan.tensor("mm.model.fc.weight")
    if fc is not None:
        plan.default("clip.vision.projection_dim", UINT32, fc.shape[1])


register(Dialect("deepseekocr", detect=lambda h: True, text=_text, projector=_projector,
                 vision_prefixes=("s.", "v.", "mm.")))
