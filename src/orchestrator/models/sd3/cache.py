"""SD3's VAE latents and prompt embeddings of a data shard, computed once and kept in the blob store.

As models/sd/latent_cache.py: the encoders are frozen, so what they compute depends only on (the
shard's content, their weights); that pair keys each entry and every trial over the same data and
base reuses it. The latent distribution (mean, std) is cached, not a sample, so training still
draws a fresh latent each step. Text: SD3's full prompt embedding (both CLIPs and T5, or T5's
zeros) and the pooled one, per distinct caption, plus those of "" for caption dropout.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.models.common.serialize import from_bytes, module_hash, to_bytes
from orchestrator.models.sd.latent_cache import encode_latents

from .components import SD3Components, encode_prompt

log = logging.getLogger(__name__)


@dataclass
class EncodedShard:
    latent_mean: torch.Tensor           # [N, C, h, w], before shift and scale
    latent_std: torch.Tensor            # [N, C, h, w]
    text_index: torch.Tensor | None     # [N] long: row of the embeddings for each example
    text_emb: torch.Tensor | None       # [U, L, D] one row per distinct caption
    pooled: torch.Tensor | None         # [U, P]
    uncond_emb: torch.Tensor | None     # [L, D] the empty caption
    uncond_pooled: torch.Tensor | None  # [P]

    def to(self, device: torch.device) -> "EncodedShard":
        return EncodedShard(*(None if t is None else t.to(device) for t in (
            self.latent_mean, self.latent_std, self.text_index, self.text_emb, self.pooled, self.uncond_emb,
            self.uncond_pooled)))


@torch.no_grad()
def encode_captions(c: SD3Components, captions: list[str], batch_size: int = 256):
    """(index per caption, embeddings and pooled of the distinct captions, those of '')."""
    distinct = sorted(set(captions))
    row = {t: i for i, t in enumerate(distinct)}
    embs, pools = [], []
    texts = distinct + [""]
    for i in range(0, len(texts), batch_size):
        emb, pooled = encode_prompt(c, texts[i:i + batch_size])
        embs.append(emb.float().cpu())
        pools.append(pooled.float().cpu())
    emb, pooled = torch.cat(embs), torch.cat(pools)
    return torch.tensor([row[t] for t in captions], dtype=torch.long), emb[:-1], pooled[:-1], emb[-1], pooled[-1]


def text_encoders_hash(c: SD3Components) -> str:
    """Every text encoder's weights, their tokenizers and T5's token length (or its absence)."""
    h = hashlib.sha256()
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(c, name)
        h.update(f"{name}:{module_hash(module) if module is not None else 'none'};".encode())
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tok = getattr(c, name)
        vocab = json.dumps(sorted(tok.get_vocab().items())) + str(tok.model_max_length) if tok is not None else "none"
        h.update(f"{name}:{vocab};".encode())
    h.update(f"max_sequence_length:{c.max_sequence_length};joint:{c.transformer.config.joint_attention_dim}".encode())
    return h.hexdigest()


class SD3Cache:
    def __init__(self, store, prefix: str = "cache/sd3"):
        self.store = store
        self.prefix = prefix.rstrip("/")

    def keys(self, c: SD3Components, data: ImageTextData) -> tuple[str, str]:
        captions_hash = hashlib.sha256(json.dumps(data.captions).encode()).hexdigest()
        return (f"{self.prefix}/latents/{data.content_hash[:24]}-{module_hash(c.vae)[:24]}.pt",
                f"{self.prefix}/text/{captions_hash[:24]}-{text_encoders_hash(c)[:24]}.pt")

    def load_or_encode(self, c: SD3Components, data: ImageTextData, *,
                       text: bool = True) -> tuple[EncodedShard, dict[str, bool]]:
        """The shard's encodings and which came from the store ({'latents': hit, 'text': hit});
        text=False caches the latents only (the text fields are then None)."""
        lat_key, txt_key = self.keys(c, data)
        hits = {}
        lat = self._get(lat_key)
        hits["latents"] = lat is not None
        if lat is None:
            mean, std = encode_latents(c, data)
            lat = {"mean": mean, "std": std}
            self.store.put(lat_key, to_bytes(lat))
        if not text:
            return EncodedShard(lat["mean"], lat["std"], None, None, None, None, None), hits
        txt = self._get(txt_key)
        hits["text"] = txt is not None
        if txt is None:
            index, emb, pooled, u_emb, u_pooled = encode_captions(c, data.captions)
            txt = {"index": index, "emb": emb, "pooled": pooled, "uncond": u_emb, "uncond_pooled": u_pooled}
            self.store.put(txt_key, to_bytes(txt))
        return EncodedShard(lat["mean"], lat["std"], txt["index"], txt["emb"], txt["pooled"], txt["uncond"],
                            txt["uncond_pooled"]), hits

    def _get(self, key: str) -> dict | None:
        if not self.store.exists(key):
            return None
        try:
            return from_bytes(self.store.get(key))
        except Exception as exc:  # noqa: BLE001 - a bad cache entry is recomputed, never fatal
            log.warning("recomputing cache entry %s: %s", key, exc)
            return None
