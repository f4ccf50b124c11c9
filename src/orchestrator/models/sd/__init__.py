"""Stable Diffusion variant: latent diffusion as diffusers builds it (VAE, U-Net, CLIP text)."""
from .pipeline import (TINY_BASE_PREFIX, SDComponents, build_tiny, download_dir, load_components, module_hash,
                       save_components, upload_dir)
from .sampling import encode_text, generate, image_grid, save_grid
from .tokenizer import build_tokenizer, tokenize

__all__ = [
    "SDComponents", "TINY_BASE_PREFIX", "build_tiny", "build_tokenizer", "download_dir", "encode_text", "generate",
    "image_grid", "load_components", "module_hash", "save_components", "save_grid", "tokenize",
    "upload_dir",
]
