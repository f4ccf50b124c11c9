"""Generated images ([N, 3, H, W] floats in [0, 1], what every generator returns) as pictures."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def image_grid(images: torch.Tensor, cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile [N, 3, H, W] images in [0, 1] into one picture, row-major, white gutters."""
    n, _, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for k, im in enumerate(to_pil(images)):
        r, col = divmod(k, cols)
        grid.paste(im, (pad + col * (w + pad), pad + r * (h + pad)))
    return grid


def save_grid(images: torch.Tensor, path: str | Path, cols: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, cols).save(path, format="PNG")
    return path
