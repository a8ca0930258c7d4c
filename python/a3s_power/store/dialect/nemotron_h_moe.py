"""Nemotron-H MoE (``nemotron_h_moe``) as Ollama's converter wrote it: the same architecture and
keys as llama.cpp's, with two differences in some files.

* The latent-FFN variants (Nemotron 3 Super) route the experts through a smaller latent width:
  Ollama named the two projections ``ffn_latent_in`` / ``ffn_latent_out`` where llama.cpp reads
  ``ffn_latent_down`` / ``ffn_latent_up``, and left out ``moe_latent_size`` (without it llama.cpp
  expects the experts at the full embedding width).
* The multi-token-prediction head is kept under its checkpoint names (``mtp.layers.*``, one
  tensor per expert). llama.cpp's text loader claims no such tensors and refuses the file; we
  hide them. llama.cpp could run that head as a NextN draft block, but this server does not
  draft with it, so nothing is lost.

Files with neither (the standard 30B-A3B variants) load as they are and are not translated.
"""

from __future__ import annotations

from . import Dialect, has_prefix, register
from .plan import Plan

_ARCH = "nemotron_h_moe"


def _detect(h) -> bool:
    return any(".ffn_latent_in." in t.name for t in h.tensors) or has_prefix(h, "mtp.")


def _text(plan: Plan) -> None:
    if not plan.has(_ARCH + ".moe_latent_size"):
        # ffn_latent_in maps the embedding to the latent width: its second ggml dimension
        for name in plan.names(r"^blk\.\d+\.ffn_latent_in\.weight$"):
            plan.set_u32(_ARCH + ".moe_latent_size", plan.tensors[name].shape[1])
            break
    plan.rename_containing(".ffn_latent_in.", ".ffn_latent_down.")
    plan.rename_containing(".ffn_latent_out.", ".ffn_latent_up.")
    plan.drop_prefix("mtp.")


register(Dialect(_ARCH, detect=_detect, text=_text))
