"""Image-caption data the trainer reads: a shard held in memory as uint8 pixels and strings.

Reads the shapes world's directory layout (images/<id>.png + captions.jsonl with one field per
caption style), which is also how `orch data` writes other image-text shards.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass
class ImageTextData:
    images: torch.Tensor   # uint8 [N, 3, H, W]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of pixels and captions: the identity caches of this shard are keyed by."""
        h = hashlib.sha256()
        h.update(f"{tuple(self.images.shape)};".encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(json.dumps(self.captions).encode())
        return h.hexdigest()

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """Float pixels in [-1, 1], the VAE's input range."""
        return self.images[idx].float().div(127.5).sub(1.0)


def load_image_text_dir(root: str | Path, caption: str = "generic") -> ImageTextData:
    root = Path(root)
    records = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines() if line.strip()]
    if records and caption not in records[0]:
        raise KeyError(f"{root / 'captions.jsonl'} has no caption field {caption!r}")
    images = [np.asarray(Image.open(root / "images" / f"{r['image_id']}.png").convert("RGB")) for r in records]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageTextData(pixels, [r[caption] for r in records])


def shapes_data(n: int, seed: int, size: int = 32, caption: str = "generic") -> ImageTextData:
    """Generate a shapes-world dataset (deterministic by seed) and load it."""
    from orchestrator.data.shapes import write_shapes_dataset

    with tempfile.TemporaryDirectory(prefix="orch-shapes-") as tmp:
        write_shapes_dataset(Path(tmp) / "ds", n=n, seed=seed, size=size)
        return load_image_text_dir(Path(tmp) / "ds", caption)
