"""SD3 finetuning's objective, as diffusers' SD3 training scripts define it: rectified flow.

    x0 = (VAE latent sample − shift_factor) · scaling_factor
    σ  = the scheduler's shifted σ at index ⌊u·1000⌋, u drawn by the weighting scheme
    x_σ = (1 − σ)·x0 + σ·ε,   timestep = σ·1000 (the scheduler's own timestep at that index)
    loss = mean over the batch of mean(w(σ)·(v − (ε − x0))²)

with v the transformer's output. With `precondition_outputs` the output is turned into
x0 = x_σ − σ·v and regressed on x0 instead. The transformer trains; the VAE and the text
encoders stay frozen (unless model.sd3.train_text_encoders), so their outputs can be cached (cache.py).

Every random draw of a step is made for the global batch from the loop's generator, in this
order: flip, latent sample, caption dropout, noise, σ — the order is part of exact resume.
"""
from __future__ import annotations

import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from orchestrator.data.image_text import ImageTextData
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.diffusion import sample_noise
from orchestrator.models.common.objective import Batch
from orchestrator.models.sd.latent_cache import latent_dist

from .cache import EncodedShard, SD3Cache
from .components import SD3Components, encode_prompt
from .options import SD3Options


def draw_u(options: SD3Options, n: int, generator: torch.Generator) -> torch.Tensor:
    """n values in [0, 1] whose density the weighting scheme sets: logit_normal
    (sigmoid of a normal), mode (v uniform, then 1 − v − s·(cos²(πv/2) − 1 + v)), uniform
    otherwise (cosmap, sigma_sqrt and uniform shape the loss, not the draw)."""
    scheme = options.weighting_scheme
    if scheme == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator) * options.logit_std + options.logit_mean)
    v = torch.rand(n, generator=generator)
    if scheme == "mode":
        return 1 - v - options.mode_scale * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)
    return v


def draw_sigma_indices(options: SD3Options, n: int, generator: torch.Generator,
                       num_train_timesteps: int) -> torch.Tensor:
    """Indices into the scheduler's σ table (descending: index 0 is σ = 1), as diffusers' scripts
    index it: ⌊u·T⌋, kept inside the table."""
    u = draw_u(options, n, generator)
    return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


def loss_weights(scheme: str, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-example loss weights: sigma_sqrt 1/σ², cosmap 2/(π(1 − 2σ + 2σ²)), 1 otherwise."""
    if scheme == "sigma_sqrt":
        return sigmas.float() ** -2.0
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas.float() + 2 * sigmas.float() ** 2))
    return torch.ones_like(sigmas, dtype=torch.float32)


def training_sigmas(c: SD3Components) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ, timestep) of every training index: a fresh scheduler's table (its shift applied), as the
    scripts read it from their copy of the scheduler."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(c.scheduler.config)
    n = int(sched.config.num_train_timesteps)
    return sched.sigmas[:n].float(), sched.timesteps[:n].float()


class SD3Objective:
    def __init__(self, c: SD3Components, data: ImageTextData, spec: TrainSpec, options: SD3Options, *,
                 store, device: torch.device, use_cache: bool = True, cache_prefix: str = "cache/sd3"):
        if spec.min_snr_gamma:
            raise ValueError("train.min_snr_gamma weights ε/v-prediction losses; sd3 trains by rectified flow: "
                             "weight it with model.sd3.weighting_scheme instead")
        self.c, self.data, self.spec, self.options, self.device = c, data, spec, options, device
        c.freeze_encoders()
        self.modules: dict[str, torch.nn.Module] = {"transformer": c.transformer}
        if options.lora is not None:
            # Only the adapters train (the transformer's own weights stay frozen): the loop's
            # optimiser, EMA and checkpoints see them alone.
            if c.lora is None:
                raise ValueError("model.sd3.lora is set but the transformer carries no adapters: load the base "
                                 "through the variant's load_base (configure) so they are put on")
            self.modules = {"transformer_lora": c.lora}
        if options.train_text_encoders:
            for name, encoder in c.text_encoders.items():
                self.modules[name] = encoder.requires_grad_(True).train()
        c.transformer.train()
        if spec.gradient_checkpointing:
            c.transformer.enable_gradient_checkpointing()
        self.num_examples = len(data)
        self.num_train_timesteps = int(c.scheduler.config.num_train_timesteps)
        sigmas, timesteps = training_sigmas(c)
        self.sigmas, self.timesteps = sigmas.to(device), timesteps.to(device)

        self.encoded: EncodedShard | None = None
        self.flipped: EncodedShard | None = None  # latents of the mirror images (random_flip)
        self.cache_hits: dict | None = None
        if use_cache:
            cache = SD3Cache(store, cache_prefix)
            encoded, self.cache_hits = cache.load_or_encode(c, data, text=not options.train_text_encoders)
            self.encoded = encoded.to(device)
            if data.random_flip:  # the mirror images are other content: their own cache entry
                mirror = ImageTextData(data.images.flip(-1), data.captions)
                self.flipped = cache.load_or_encode(c, mirror, text=False)[0].to(device)
        if options.train_text_encoders:
            self.uncond = None  # "" is encoded with the captions, every step
        elif use_cache:
            self.uncond = (self.encoded.uncond_emb, self.encoded.uncond_pooled)
        else:
            with torch.no_grad():
                emb, pooled = encode_prompt(c, [""])
            self.uncond = (emb[0].float(), pooled[0].float())

    # ---- inputs ----------------------------------------------------------------------
    def _latent_dist(self, idx: torch.Tensor, flip: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent distribution of the examples' images (mirrored where `flip` says)."""
        return latent_dist(self.c.vae, self.data, idx, flip, self.device, self.encoded, self.flipped)

    def _text(self, idx: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token, pooled) prompt embeddings of the examples' captions, ""'s where `drop` says."""
        if self.options.train_text_encoders:
            drops = [False] * len(idx) if drop is None else drop.tolist()
            return encode_prompt(self.c, ["" if d else self.data.captions[i] for i, d in zip(idx.tolist(), drops)])
        if self.encoded is not None:
            rows = self.encoded.text_index[idx.to(self.device)]
            emb, pooled = self.encoded.text_emb[rows], self.encoded.pooled[rows]
        else:
            with torch.no_grad():
                emb, pooled = encode_prompt(self.c, [self.data.captions[i] for i in idx.tolist()])
            emb, pooled = emb.float(), pooled.float()
        if drop is not None:
            d = drop.to(self.device)
            emb = torch.where(d[:, None, None], self.uncond[0].expand_as(emb), emb)
            pooled = torch.where(d[:, None], self.uncond[1].expand_as(pooled), pooled)
        return emb, pooled

    # ---- the loss --------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        g, b = batch.generator, batch.size
        flip = batch.keep(torch.rand(b, generator=g) < 0.5) if self.data.random_flip else None
        mean, std = self._latent_dist(batch.indices, flip)
        full = (b, *mean.shape[1:])
        sample = mean + std * batch.keep(torch.randn(full, generator=g)).to(self.device)
        x0 = (sample - self.c.shift_factor) * self.c.scaling_factor
        drop = None
        if self.options.caption_dropout > 0:
            drop = batch.keep(torch.rand(b, generator=g) < self.options.caption_dropout)
        noise = batch.keep(sample_noise(full, g, self.spec.noise_offset)).to(self.device)
        idx = batch.keep(draw_sigma_indices(self.options, b, g, self.num_train_timesteps)).to(self.device)
        sigma = self.sigmas[idx].view(-1, 1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        with batch.autocast():
            emb, pooled = self._text(batch.indices, drop)
            tr = self.c.transformer
            dtype = next(tr.parameters()).dtype  # diffusers' tr.dtype walks every submodule: ~1% of a tiny step
            pred = tr(hidden_states=noisy.to(dtype), timestep=self.timesteps[idx],
                      encoder_hidden_states=emb.to(dtype), pooled_projections=pooled.to(dtype)).sample
        pred = pred.float()
        if self.options.precondition_outputs:
            pred, target = pred * (-sigma) + noisy, x0
        else:
            target = noise - x0
        w = loss_weights(self.options.weighting_scheme, sigma.flatten()).view(-1, 1, 1, 1)
        return (w * (pred - target.float()) ** 2).reshape(pred.shape[0], -1).mean(dim=1).mean()
