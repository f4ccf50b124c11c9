"""VAE latents and text embeddings of a data shard, computed once and kept in the blob store.

The encoders are frozen, so their outputs depend only on (shard content, encoder weights):
that pair is the cache key, and every trial of a sweep over the same data and base model
reuses one encoding. The latent *distribution* (mean, std) is cached rather than one sample,
so the trainer still draws a fresh latent sample each step, exactly as without the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.models.common.serialize import from_bytes, to_bytes
from orchestrator.models.common.shapes_tokenizer import tokenize

from .pipeline import SDComponents, module_hash

log = logging.getLogger(__name__)


@dataclass
class EncodedShard:
    latent_mean: torch.Tensor   # [N, C, h, w], unscaled (multiply samples by vae scaling_factor)
    latent_std: torch.Tensor    # [N, C, h, w]
    text_index: torch.Tensor | None  # [N] long: row of text_emb for each example
    text_emb: torch.Tensor | None    # [U, L, D] one row per distinct caption
    uncond_emb: torch.Tensor | None  # [L, D] the empty caption, for caption dropout / CFG

    def text_for(self, idx: torch.Tensor) -> torch.Tensor:
        return self.text_emb[self.text_index[idx]]

    def to(self, device: torch.device) -> "EncodedShard":
        return EncodedShard(*(None if t is None else t.to(device) for t in (
            self.latent_mean, self.latent_std, self.text_index, self.text_emb, self.uncond_emb)))


@torch.no_grad()
def encode_latents(c: SDComponents, data: ImageTextData, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's latent distribution of every image; `c` needs only a `vae` (sd3
    encodes with this too)."""
    dev, dtype = c.vae.device, c.vae.dtype
    means, stds = [], []
    for i in range(0, len(data), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(data)))
        dist = c.vae.encode(data.pixels(idx).to(dev, dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_captions(c: SDComponents, captions: list[str], batch_size: int = 256):
    """(index per caption, embeddings of the distinct captions, embedding of '')."""
    distinct = sorted(set(captions))
    row = {t: i for i, t in enumerate(distinct)}
    embs = []
    for i in range(0, len(distinct) + 1, batch_size):
        chunk = (distinct + [""])[i:i + batch_size]
        ids = tokenize(c.tokenizer, chunk).to(c.text_encoder.device)
        embs.append(c.text_encoder(ids)[0].float().cpu())
    emb = torch.cat(embs)
    return torch.tensor([row[t] for t in captions], dtype=torch.long), emb[:-1], emb[-1]


def text_encoder_hash(c: SDComponents) -> str:
    """Weights and tokenizer: the same weights under another vocabulary give other embeddings."""
    vocab = json.dumps(sorted(c.tokenizer.get_vocab().items())) + str(c.tokenizer.model_max_length)
    return hashlib.sha256((module_hash(c.text_encoder) + vocab).encode()).hexdigest()


class LatentCache:
    def __init__(self, store, prefix: str = "cache/sd"):
        self.store = store
        self.prefix = prefix.rstrip("/")

    def keys(self, c: SDComponents, data: ImageTextData) -> tuple[str, str]:
        captions_hash = hashlib.sha256(json.dumps(data.captions).encode()).hexdigest()
        return (f"{self.prefix}/latents/{data.content_hash[:24]}-{module_hash(c.vae)[:24]}.pt",
                f"{self.prefix}/text/{captions_hash[:24]}-{text_encoder_hash(c)[:24]}.pt")

    def load_or_encode(self, c: SDComponents, data: ImageTextData, *,
                       text: bool = True) -> tuple[EncodedShard, dict[str, bool]]:
        """The shard's encodings and which of them came from the store ({'latents': hit, 'text': hit}).
        text=False (a trained text encoder) caches the latents only; the text fields are then None."""
        lat_key, txt_key = self.keys(c, data)
        hits = {}
        lat = self._get(lat_key)
        hits["latents"] = lat is not None
        if lat is None:
            mean, std = encode_latents(c, data)
            lat = {"mean": mean, "std": std}
            self.store.put(lat_key, to_bytes(lat))
        if not text:
            return EncodedShard(lat["mean"], lat["std"], None, None, None), hits
        txt = self._get(txt_key)
        hits["text"] = txt is not None
        if txt is None:
            index, emb, uncond = encode_captions(c, data.captions)
            txt = {"index": index, "emb": emb, "uncond": uncond}
            self.store.put(txt_key, to_bytes(txt))
        return EncodedShard(lat["mean"], lat["std"], txt["index"], txt["emb"], txt["uncond"]), hits

    def _get(self, key: str) -> dict | None:
        if not self.store.exists(key):
            return None
        try:
            return from_bytes(self.store.get(key))
        except Exception as exc:  # noqa: BLE001 - a bad cache entry is recomputed, never fatal
            log.warning("recomputing cache entry %s: %s", key, exc)
            return None


def latent_dist(vae, data: ImageTextData, idx: torch.Tensor, flip: torch.Tensor | None, device: torch.device,
                encoded=None, flipped=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent distribution of examples `idx` (mirrored where `flip` says): from the cached
    shards `encoded` / `flipped` (their mirror images) when given, else encoded now."""
    if encoded is not None:
        dev_idx = idx.to(device)
        mean, std = encoded.latent_mean[dev_idx], encoded.latent_std[dev_idx]
        if flip is not None:
            f = flip.to(device)[:, None, None, None]
            mean = torch.where(f, flipped.latent_mean[dev_idx], mean)
            std = torch.where(f, flipped.latent_std[dev_idx], std)
        return mean, std
    pixels = data.pixels(idx)
    if flip is not None:
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    with torch.no_grad():
        dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()
