"""CLIP image embeddings of a dataset, computed once and kept in the blob store.

The CLIP is frozen, so an image's embedding depends only on (image content, CLIP weights and
preprocessing): that pair is the cache key (the pixels only, not the captions: one entry serves
every caption style of the same images), and every trial of a sweep over the same data and CLIP
reuses one computation. Embeddings are the *unnormalised* projections (what the prior learns to
generate), float32, one row per example in the data's order.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.models.common.serialize import from_bytes, module_hash, to_bytes

log = logging.getLogger(__name__)


def clip_hash(clip: Any) -> str:
    """The CLIP's identity for its image embeddings: weights and preprocessing."""
    pre = clip.preprocess
    prep = f"{pre.shortest_edge};{pre.crop};{pre.mean.flatten().tolist()};{pre.std.flatten().tolist()}"
    return hashlib.sha256((module_hash(clip.model) + prep).encode()).hexdigest()


def pixels_hash(images: torch.Tensor) -> str:
    h = hashlib.sha256(f"{tuple(images.shape)};{images.dtype};".encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def image_embeddings(clip: Any, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N, D] unnormalised CLIP image embeddings of uint8 (or [0, 1] float) images [N, 3, H, W]."""
    outs = [clip.image_features(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, clip.embed_dim)


class EmbeddingCache:
    def __init__(self, store: Any, prefix: str = "cache/vcdm"):
        self.store = store
        self.prefix = prefix.rstrip("/")

    def key(self, clip: Any, data: ImageTextData) -> str:
        return f"{self.prefix}/clip-image/{pixels_hash(data.images)[:24]}-{clip_hash(clip)[:24]}.pt"

    def load_or_compute(self, clip: Any, data: ImageTextData) -> tuple[torch.Tensor, bool]:
        """(embeddings [N, D], whether they came from the store). No store: computed, not kept."""
        if self.store is None:
            return image_embeddings(clip, data.images), False
        key = self.key(clip, data)
        cached = self._get(key, len(data))
        if cached is not None:
            return cached, True
        emb = image_embeddings(clip, data.images)
        self.store.put(key, to_bytes({"embeddings": emb}))
        return emb, False

    def _get(self, key: str, n: int) -> torch.Tensor | None:
        if not self.store.exists(key):
            return None
        try:
            emb = from_bytes(self.store.get(key))["embeddings"]
        except Exception as exc:  # noqa: BLE001 - a bad cache entry is recomputed, never fatal
            log.warning("recomputing cache entry %s: %s", key, exc)
            return None
        if emb.shape[0] != n:
            log.warning("recomputing cache entry %s: %d rows for %d examples", key, emb.shape[0], n)
            return None
        return emb
