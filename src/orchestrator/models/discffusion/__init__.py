"""Discffusion: Stable Diffusion's cross-attention as an image-text matcher (a matcher variant over
any SD base). variant.py holds its spec, `SPEC` (what the registry hands out); options.py its
manifest section; capture.py reads the cross-attention maps through diffusers' attention
processors (no forked U-Net); score.py turns them into a score per (caption, image), with the
baselines that score by noise-prediction error beside it. Importing this package loads no torch.
"""
from .variant import SPEC

__all__ = ["SPEC"]
