"""Stable Diffusion variant: latent diffusion as diffusers builds it (VAE, U-Net, CLIP text).

variant.py holds its spec, `SPEC` (what the registry hands out); options.py its manifest section;
pipeline.py builds, loads and saves the components; objective.py is the finetuning loss;
sampling.py generates; latent_cache.py caches encodings. The names below load on first use
(PEP 562), so reading the spec to check a manifest imports no diffusers.
"""
import importlib

from .variant import SPEC

_LAZY = {
    "SDComponents": "pipeline", "build_tiny": "pipeline",
    "load_components": "pipeline", "module_hash": "pipeline", "save_components": "pipeline",
    "encode_text": "sampling", "generate": "sampling", "image_grid": "images", "save_grid": "images",
    "to_pil": "images", "build_tokenizer": "shapes_tokenizer", "tokenize": "shapes_tokenizer", "tiny_config": None,
}
__all__ = ["SPEC", *_LAZY]
_COMMON = ("images", "shapes_tokenizer")  # shared with other variants: they live in models/common


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _LAZY[name]
    module = importlib.import_module(f"orchestrator.models.common.{where}" if where in _COMMON
                                     else f"{__name__}.{where or name}")
    return module if where is None else getattr(module, name)
