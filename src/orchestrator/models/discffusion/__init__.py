"""Discffusion: Stable Diffusion's cross-attention as an image-text matcher (a matcher variant over
any SD base). variant.py is the registry's entry; capture.py reads the cross-attention maps
through diffusers' attention processors (no forked U-Net); score.py turns them into a score per
(caption, image), with the baselines that score by noise-prediction error beside it.
Importing this package loads no torch.
"""
