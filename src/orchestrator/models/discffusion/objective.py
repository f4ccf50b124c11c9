"""Few-shot training of Discffusion's p_k / p_v adapters with the paper's margin loss:
for each text choice, Σ_neg max(0, f(neg) − f(pos) + M), averaged, everything else frozen.

Each step draws fresh noise for every example of the global batch from the loop's generator (so
exact resume and data parallelism hold); all candidates of an example share it, as at scoring.
An image's mean latent is computed once (the VAE is frozen) and kept.
"""
from __future__ import annotations

import torch

from orchestrator.data.choices import ChoiceData
from orchestrator.manifest.schema import DiscffusionOptions, TrainSpec
from orchestrator.models.common.objective import Batch

from .score import DiffusionScorer, Prepared


class MarginObjective:
    def __init__(self, m, data: ChoiceData, spec: TrainSpec, options: DiscffusionOptions, *, device: torch.device):
        self.m, self.data, self.options, self.device = m, data, options, device
        for module in (m.sd.unet, m.sd.vae, m.sd.text_encoder):
            module.requires_grad_(False).eval()
        m.adapters.requires_grad_(True).train()
        self.modules = {"adapters": m.adapters}
        self.num_examples = len(data)
        self.scorer: DiffusionScorer = m.scorer()
        self._latents: dict[int, torch.Tensor] = {}

    def _latent(self, i: int) -> torch.Tensor:
        if i not in self._latents:
            self._latents[i] = self.scorer.encode(self.data.choices[i].image.open_image())
        return self._latents[i]

    def loss(self, batch: Batch) -> torch.Tensor:
        g, steps = batch.generator, self.scorer.timesteps
        idx = batch.indices.tolist()
        shape = self._latent(idx[0]).shape[1:]
        noise = batch.keep(torch.randn((batch.size, len(steps), *shape), generator=g)).to(self.device)
        losses = []
        for row, i in enumerate(idx):
            choice = self.data.choices[i]
            latents = self._latent(i)
            prepared = Prepared(latents, {t: noise[row, k][None].to(latents.dtype) for k, t in enumerate(steps)})
            with batch.autocast():
                s = self.scorer.score_candidates(None, list(choice.texts), prepared)
            pos = s[choice.answer]
            neg = torch.cat([s[:choice.answer], s[choice.answer + 1:]])
            losses.append(torch.relu(neg - pos + self.options.margin).mean())
        return torch.stack(losses).mean()
