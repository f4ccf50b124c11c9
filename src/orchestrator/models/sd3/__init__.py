"""Stable Diffusion 3 / 3.5 variant: the MMDiT (SD3Transformer2DModel) over a 16- or 4-channel VAE
latent, conditioned on two CLIPs and an optional T5, trained by rectified flow.

variant.py holds its spec, `SPEC`; options.py its manifest section; components.py builds, loads,
saves and encodes prompts; objective.py is the finetuning loss; cache.py keeps encodings in the
blob store; sampling.py generates. The names below load on first use (PEP 562), so reading the
spec to check a manifest imports no diffusers.
"""
import importlib

from .variant import SPEC

_LAZY = {
    "SD3Components": "components", "build_tiny": "components", "build_t5_tokenizer": "components",
    "encode_prompt": "components", "load_components": "components", "save_components": "components",
    "generate": "sampling", "SD3Objective": "objective", "draw_sigma_indices": "objective",
    "loss_weights": "objective",
}
__all__ = ["SPEC", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
