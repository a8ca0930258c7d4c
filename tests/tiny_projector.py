"""A tiny random-weight CLIP vision projector ("mmproj") GGUF, generated with the ``gguf`` package.

No real vision model can be fetched in the test environment, so vision support is exercised with
this file instead. It is a LLaVA-1.5-style projector, the simplest layout llama.cpp's ``libmtmd``
accepts: ``clip.projector_type`` = ``"mlp"``, a ViT encoder (conv patch embedding, learned position
embeddings, pre-layernorm, ``n_layer`` pre-norm transformer blocks) followed by the two-layer MLP
projector ``mm.0`` -> GELU -> ``mm.2`` whose output width is the text model's embedding width.

mtmd preprocesses every image with its fixed-size path: resize (stretch) to ``image_size`` square,
normalise with ``image_mean``/``image_std``, and emits ``(image_size // patch_size) ** 2`` image
tokens (16 at the defaults), each ``text_n_embd`` floats wide. mtmd rejects the file at
``mtmd_init_from_file`` when ``text_n_embd`` differs from the text model's ``n_embd``.

Random weights prove plumbing, never quality: the embeddings mean nothing to the text model.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# OpenAI CLIP's preprocessing constants, as LLaVA-1.5 ships them.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def image_token_count(image_size: int = 32, patch_size: int = 8) -> int:
    """How many embeddings (text positions) one image takes with this projector."""
    return (image_size // patch_size) ** 2


def write_tiny_projector(
    path: Path,
    *,
    text_n_embd: int,
    image_size: int = 32,
    patch_size: int = 8,
    n_embd: int = 64,
    n_layer: int = 1,
    n_head: int = 2,
    n_ff: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random-weight LLaVA-style ("mlp") vision projector GGUF (all f32) and return ``path``.

    ``text_n_embd`` is the output width (the text model's embedding width); ``n_embd``, ``n_layer``,
    ``n_head`` and ``n_ff`` size the vision encoder. About 1.5 MB for ``text_n_embd=576``, almost all
    of it the ``text_n_embd`` x ``text_n_embd`` matrix ``mm.2``.
    """
    if image_size <= 0 or patch_size <= 0 or image_size % patch_size:
        raise ValueError("image_size must be a positive multiple of patch_size")
    if n_layer < 1 or n_head < 1 or n_embd % n_head:
        raise ValueError("need n_layer >= 1 and n_embd divisible by n_head")
    # Note: with n_ff == n_embd clip.cpp's legacy fix-up swaps ffn_up and ffn_down (it takes an
    # ffn_down of input width n_embd for a transposed one); harmless for random weights.

    rng = np.random.default_rng(seed)
    n_patches = image_token_count(image_size, patch_size)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("tiny-random-llava-projector")
    writer.add_description("image encoder for LLaVA (random weights, for tests)")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_bool(gguf.Keys.Clip.HAS_LLAVA_PROJECTOR, True)  # legacy key; harmless, informative
    writer.add_clip_projector_type("mlp")
    writer.add_vision_image_size(image_size)
    writer.add_vision_patch_size(patch_size)
    writer.add_vision_embedding_length(n_embd)
    writer.add_vision_feed_forward_length(n_ff)
    writer.add_vision_block_count(n_layer)
    writer.add_vision_head_count(n_head)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_projection_dim(text_n_embd)
    writer.add_vision_image_mean(list(CLIP_IMAGE_MEAN))
    writer.add_vision_image_std(list(CLIP_IMAGE_STD))
    # Without clip.use_gelu/use_silu the encoder FFN uses CLIP's quick-GELU, as LLaVA-1.5's does.
    # mtmd's llava graph stops one block early (LLaVA takes the second-to-last hidden state) unless
    # feature layers are given; naming the last one makes every block here run.
    writer.add_array("clip.vision.feature_layer", [n_layer])

    def weight(*shape: int, scale: float = 1.0) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return (rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32)

    def small(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # numpy shapes are row-major (out, in); gguf stores them reversed, as ggml's ne = (in, out).
    writer.add_tensor("v.patch_embd.weight", weight(n_embd, 3, patch_size, patch_size))
    writer.add_tensor("v.patch_embd.bias", small(n_embd))
    writer.add_tensor("v.position_embd.weight", weight(n_patches, n_embd, scale=0.1 * np.sqrt(n_embd)))
    writer.add_tensor("v.pre_ln.weight", ones(n_embd))
    writer.add_tensor("v.pre_ln.bias", small(n_embd))
    for i in range(n_layer):
        p = f"v.blk.{i}"
        writer.add_tensor(f"{p}.ln1.weight", ones(n_embd))
        writer.add_tensor(f"{p}.ln1.bias", small(n_embd))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", weight(n_embd, n_embd))
            writer.add_tensor(f"{p}.{name}.bias", small(n_embd))
        writer.add_tensor(f"{p}.ln2.weight", ones(n_embd))
        writer.add_tensor(f"{p}.ln2.bias", small(n_embd))
        writer.add_tensor(f"{p}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{p}.ffn_up.bias", small(n_ff))
        writer.add_tensor(f"{p}.ffn_down.weight", weight(n_embd, n_ff))
        writer.add_tensor(f"{p}.ffn_down.bias", small(n_embd))
    writer.add_tensor("mm.0.weight", weight(text_n_embd, n_embd))
    writer.add_tensor("mm.0.bias", small(text_n_embd))
    writer.add_tensor("mm.2.weight", weight(text_n_embd, text_n_embd))
    writer.add_tensor("mm.2.bias", small(text_n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bmp_image(width: int = 20, height: int = 12, seed: int = 0) -> bytes:
    """A small 24-bit BMP file of random pixels: a real image file that libmtmd's decoder reads."""
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    row = (width * 3 + 3) & ~3
    pixels = bytearray()
    for _ in range(height):
        line = rng.integers(0, 256, size=width * 3, dtype=np.uint8).tobytes()
        pixels += line + b"\0" * (row - width * 3)
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + bytes(pixels)
