"""VCDM's training objective: both stages in one trial, each freezable.

- prior: the EDM loss (edm.py) of the examples' CLIP image embeddings;
- unet: the ε-prediction MSE of a noised image, the U-Net conditioned on the image's own embedding
  (the projection added to the timestep embedding), or on nothing (`conditioning: none`).

Pixel space: the images are the training signal itself. The embeddings come from the frozen CLIP
once per (pixels, CLIP) through the blob-store cache (embeddings.py); with `random_flip` the mirror
images' embeddings are a cache entry of their own, so a flipped image is conditioned on its own.
The loss of `both` is the sum of the two stages' losses.
"""
from __future__ import annotations

from typing import Any

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.diffusion import diffusion_loss, min_snr_weights, sample_noise, training_target
from orchestrator.models.common.objective import Batch

from .edm import edm_loss
from .embeddings import EmbeddingCache
from .model import VCDM
from .options import VCDMOptions


class VCDMObjective:
    def __init__(self, m: VCDM, data: ImageTextData, spec: TrainSpec, options: VCDMOptions, *, store: Any,
                 device: torch.device, use_cache: bool = True, cache_prefix: str = "cache/vcdm"):
        self.m, self.data, self.spec, self.options, self.device = m, data, spec, options, device
        self.conditioned = options.conditioning == "embedding"
        parts = m.modules()
        self.modules = {name: parts[name] for name in options.stages}
        for name, module in parts.items():
            module.requires_grad_(name in self.modules).train(name in self.modules)
        if not self.conditioned:  # the unconditional baseline: the projection stays zero, untrained
            m.image.embed_proj.requires_grad_(False)
        if spec.gradient_checkpointing:
            m.image.unet.enable_gradient_checkpointing()
        self.num_examples = len(data)
        self.alphas_cumprod = m.scheduler.alphas_cumprod.to(device)
        self.num_train_timesteps = int(m.scheduler.config.num_train_timesteps)
        self.embeddings = self.flipped = None
        self.cache_hits: dict | None = None
        if self.conditioned:
            self._embed(store if use_cache else None, cache_prefix)

    def _embed(self, store: Any, prefix: str) -> None:
        if self.m.clip is None:
            raise ValueError("VCDM trains on CLIP image embeddings: the model has no CLIP (model.vcdm.clip)")
        if self.m.clip.embed_dim != self.m.embed_dim:
            raise ValueError(f"the CLIP embeds in {self.m.clip.embed_dim} dimensions, the model's prior and "
                             f"projection in {self.m.embed_dim}")
        cache = EmbeddingCache(store, prefix)
        emb, hit = cache.load_or_compute(self.m.clip, self.data)
        self.embeddings, self.cache_hits = emb.to(self.device), {"embeddings": hit}
        if self.data.random_flip:
            mirror = ImageTextData(self.data.images.flip(-1), self.data.captions)
            flipped, hit = cache.load_or_compute(self.m.clip, mirror)
            self.flipped, self.cache_hits["flipped"] = flipped.to(self.device), hit

    def _embeddings_of(self, idx: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        dev_idx = idx.to(self.device)
        emb = self.embeddings[dev_idx]
        if flip is not None:
            emb = torch.where(flip.to(self.device)[:, None], self.flipped[dev_idx], emb)
        return emb

    def loss(self, batch: Batch) -> torch.Tensor:
        # Draw order (flip, dropout, image noise, timesteps, prior σ, prior noise) is part of exact
        # resume: keep it. Draws of a stage that is not trained are not made.
        g, b = batch.generator, batch.size
        flip = batch.keep(torch.rand(b, generator=g) < 0.5) if self.data.random_flip else None
        emb = self._embeddings_of(batch.indices, flip) if self.conditioned else None
        total = torch.zeros((), device=self.device)
        if "unet" in self.modules:
            total = total + self._image_loss(batch, flip, emb)
        if "prior" in self.modules:
            log_sigma = batch.keep(torch.randn(b, generator=g))
            noise = batch.keep(torch.randn((b, self.m.embed_dim), generator=g))
            with batch.autocast():
                total = total + edm_loss(self.m.prior, emb, log_sigma, noise, self.m.edm).mean()
        return total

    def _image_loss(self, batch: Batch, flip: torch.Tensor | None, emb: torch.Tensor | None) -> torch.Tensor:
        g, b = batch.generator, batch.size
        x0 = self.data.pixels(batch.indices)
        if flip is not None:
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        present = None
        if emb is not None and self.options.embedding_dropout > 0:
            present = batch.keep(torch.rand(b, generator=g) >= self.options.embedding_dropout)
        x0 = x0.to(self.device)
        noise = batch.keep(sample_noise((b, *x0.shape[1:]), g, self.spec.noise_offset)).to(self.device)
        t = batch.keep(torch.randint(0, self.num_train_timesteps, (b,), generator=g)).to(self.device)
        noisy = self.m.scheduler.add_noise(x0, noise, t)
        with batch.autocast():
            pred = self.m.image(noisy, t, emb, present)
        weights = (min_snr_weights(self.alphas_cumprod, t, self.spec.min_snr_gamma,
                                   self.m.scheduler.config.prediction_type)
                   if self.spec.min_snr_gamma else None)
        return diffusion_loss(pred, training_target(self.m.scheduler, x0, noise, t), weights)
