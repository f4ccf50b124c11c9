"""GLIDE-mini's training objective: the hybrid loss (ε MSE + the VLB term for the learned
variance) of a noised image, on the U-Net, the text transformer, or both.

Pixel space: the batch's images are the training signal itself, no encoder in front. With the text
side frozen its outputs are computed under no_grad (nothing to cache across steps that would pay:
a tiny text transformer costs less than a blob round trip, the full one's outputs are 256 KiB per
caption).
"""
from __future__ import annotations

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.diffusion import min_snr_weights, sample_noise
from orchestrator.models.common.objective import Batch

from .diffusion import vlb_bits
from .model import GlideMini
from .options import GlideMiniOptions

TRAINED = {"unet": ("unet",), "text": ("text",), "both": ("unet", "text")}


class GlideObjective:
    def __init__(self, m: GlideMini, data: ImageTextData, spec: TrainSpec, options: GlideMiniOptions, *,
                 device: torch.device):
        self.m, self.data, self.spec, self.options, self.device = m, data, spec, options, device
        parts = m.modules()
        self.modules = {name: parts[name] for name in TRAINED[options.train]}
        for name, module in parts.items():
            trained = name in self.modules
            module.requires_grad_(trained).train(trained)
        if spec.gradient_checkpointing:
            m.unet.checkpointing = m.text.transformer.checkpointing = True
        self.num_examples = len(data)
        self.tokens, self.mask = m.tokens(data.captions)
        self.uncond_tokens, self.uncond_mask = m.tokens([""])
        steps = m.config.diffusion_steps
        self.vlb_weight = options.vlb_weight if options.vlb_weight is not None else steps / 1000
        self.learn_sigma = m.config.learn_sigma

    def _text(self, idx: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self.tokens[idx], self.mask[idx]
        if drop is not None:
            d = drop[:, None]
            tokens = torch.where(d, self.uncond_tokens.expand_as(tokens), tokens)
            mask = torch.where(d, self.uncond_mask.expand_as(mask), mask)
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        if "text" in self.modules:
            return self.m.text(tokens, mask)
        with torch.no_grad():
            return self.m.text(tokens, mask)

    def loss(self, batch: Batch) -> torch.Tensor:
        # Draw order (flip, dropout, noise, timesteps) is part of exact resume: keep it.
        g, b, sched = batch.generator, batch.size, self.m.schedule
        x0 = self.data.pixels(batch.indices)
        if self.data.random_flip:
            flip = batch.keep(torch.rand(b, generator=g) < 0.5)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        drop = None
        if self.options.caption_dropout > 0:
            drop = batch.keep(torch.rand(b, generator=g) < self.options.caption_dropout)
        x0 = x0.to(self.device)
        noise = batch.keep(sample_noise((b, *x0.shape[1:]), g, self.spec.noise_offset)).to(self.device)
        t = batch.keep(torch.randint(0, sched.num_steps, (b,), generator=g)).to(self.device)
        xt = sched.q_sample(x0, t, noise)
        with batch.autocast():
            proj, seq = self._text(batch.indices, drop)
            out = self.m.unet(xt, t, proj, seq)
        eps = out[:, :3] if self.learn_sigma else out
        mse = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))
        if self.spec.min_snr_gamma:
            mse = mse * min_snr_weights(sched.alphas_cumprod, t, self.spec.min_snr_gamma)
        if not self.learn_sigma or self.vlb_weight == 0:
            return mse.mean()
        return (mse + self.vlb_weight * vlb_bits(sched, out.float(), x0, xt, t)).mean()
