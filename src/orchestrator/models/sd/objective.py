"""SD finetuning's objective (diffusers' train_text_to_image): the U-Net (and, if asked, the text
encoder) trained on the ε- or v-prediction loss of a noised VAE latent; the VAE stays frozen.
With `lora` only the U-Net's adapters train (train_text_to_image_lora).

With the cache, VAE latent distributions (mean, std) and, for a frozen text encoder, caption
embeddings are computed once per (data content, encoder weights) and kept in the blob store;
each step still draws a fresh latent sample, exactly as without the cache.
"""
from __future__ import annotations

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.diffusion import diffusion_loss, min_snr_weights, sample_noise, training_target
from orchestrator.models.common.objective import Batch
from orchestrator.models.common.shapes_tokenizer import tokenize

from .latent_cache import EncodedShard, LatentCache, latent_dist
from .options import SDOptions
from .pipeline import SDComponents


class SDObjective:
    def __init__(self, c: SDComponents, data: ImageTextData, spec: TrainSpec, options: SDOptions, *,
                 store, device: torch.device, use_cache: bool = True, cache_prefix: str = "cache/sd"):
        self.c, self.data, self.spec, self.options, self.device = c, data, spec, options, device
        c.freeze_encoders()
        self.modules: dict[str, torch.nn.Module] = {"unet": c.unet}
        if options.lora is not None:
            # Only the adapters train (the U-Net's own weights stay frozen): the loop's optimiser,
            # EMA and checkpoints see them alone.
            if c.lora is None:
                raise ValueError("model.sd.lora is set but the U-Net carries no adapters: load the base "
                                 "through the variant's load_base (configure) so they are put on")
            self.modules = {"unet_lora": c.lora}
        if options.train_text_encoder:
            c.text_encoder.requires_grad_(True).train()
            self.modules["text_encoder"] = c.text_encoder
        c.unet.train()
        if spec.gradient_checkpointing:
            c.unet.enable_gradient_checkpointing()
        self.num_examples = len(data)
        self.alphas_cumprod = c.scheduler.alphas_cumprod.to(device)
        self.num_train_timesteps = int(c.scheduler.config.num_train_timesteps)

        self.encoded: EncodedShard | None = None
        self.flipped: EncodedShard | None = None  # latents of the mirror images (random_flip)
        self.cache_hits: dict | None = None
        if use_cache:
            cache = LatentCache(store, cache_prefix)
            encoded, self.cache_hits = cache.load_or_encode(c, data, text=not options.train_text_encoder)
            self.encoded = encoded.to(device)
            if data.random_flip:  # the mirror images are other content: their own cache entry
                mirror = ImageTextData(data.images.flip(-1), data.captions)
                self.flipped = cache.load_or_encode(c, mirror, text=False)[0].to(device)
        if options.train_text_encoder:
            # Token ids once; their embeddings change every step, so they are never cached.
            self.caption_ids = tokenize(c.tokenizer, data.captions)
            self.uncond_ids = tokenize(c.tokenizer, [""])[0]
        elif self.encoded is not None:
            self.uncond = self.encoded.uncond_emb
        else:
            with torch.no_grad():
                self.uncond = c.text_encoder(tokenize(c.tokenizer, [""]).to(device))[0][0].float()

    # ---- inputs ----------------------------------------------------------------------
    def _latent_dist(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent distribution of the examples' images (mirrored where `flip` says)."""
        return latent_dist(self.c.vae, self.data, idx, flip, self.device, self.encoded, self.flipped)

    def _text(self, idx: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """Per-token embeddings of the examples' captions, "" where `drop` says (caption dropout)."""
        if self.options.train_text_encoder:
            ids = self.caption_ids[idx]
            if drop is not None:
                ids = torch.where(drop[:, None], self.uncond_ids.expand_as(ids), ids)
            return self.c.text_encoder(ids.to(self.device))[0]
        if self.encoded is not None:
            text = self.encoded.text_for(idx.to(self.device))
        else:
            with torch.no_grad():
                ids = tokenize(self.c.tokenizer, [self.data.captions[i] for i in idx.tolist()]).to(self.device)
                text = self.c.text_encoder(ids)[0].float()
        if drop is not None:
            text = torch.where(drop.to(self.device)[:, None, None], self.uncond.expand_as(text), text)
        return text

    # ---- the loss --------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        # Draw order (flip, latent sample, dropout, noise, timesteps) is part of exact resume: keep it.
        g, b = batch.generator, batch.size
        flip = batch.keep(torch.rand(b, generator=g) < 0.5) if self.data.random_flip else None
        mean, std = self._latent_dist(batch.indices, flip)
        full = (b, *mean.shape[1:])
        latents = (mean + std * batch.keep(torch.randn(full, generator=g)).to(self.device)) * self.c.latent_scale
        drop = None
        if self.options.caption_dropout > 0:
            drop = batch.keep(torch.rand(b, generator=g) < self.options.caption_dropout)
        noise = batch.keep(sample_noise(full, g, self.spec.noise_offset)).to(self.device)
        t = batch.keep(torch.randint(0, self.num_train_timesteps, (b,), generator=g)).to(self.device)
        with batch.autocast():
            text = self._text(batch.indices, drop)
        noisy = self.c.scheduler.add_noise(latents, noise, t)
        with batch.autocast():
            pred = self.c.unet(noisy, t, encoder_hidden_states=text.to(self.c.unet.dtype)).sample
        weights = (min_snr_weights(self.alphas_cumprod, t, self.spec.min_snr_gamma,
                                   self.c.scheduler.config.prediction_type)
                   if self.spec.min_snr_gamma else None)
        return diffusion_loss(pred, training_target(self.c.scheduler, latents, noise, t), weights)
