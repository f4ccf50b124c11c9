"""Few-shot training of Discffusion's adapters (p_k / p_v or LoRA: adapters.py) with the paper's
margin loss: for each choice, Σ_neg max(0, f(neg) − f(pos) + M), averaged, everything else frozen;
with head weighting the scored layers' head weights are learned on the way (capture.HeadWeights). A text
choice's negatives are its other texts; an image choice's (ComVG) its other images.

Each step draws fresh noise for every example of the global batch from the loop's generator (so
exact resume and data parallelism hold); all candidates of an example share it, as at scoring.
An image's mean latent is computed once (the VAE is frozen) and kept.
"""
from __future__ import annotations

import torch

from orchestrator.data.choices import ChoiceData
from orchestrator.data.loaders.base import ImageChoice
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.objective import Batch

from .options import DiscffusionOptions
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

    def _latent(self, i: int, j: int = 0) -> torch.Tensor:
        """The mean latent of choice i's image (its j-th image for an image choice), computed once."""
        if (i, j) not in self._latents:
            choice = self.data.choices[i]
            ref = choice.images[j] if isinstance(choice, ImageChoice) else choice.image
            self._latents[(i, j)] = self.scorer.encode(ref.open_image())
        return self._latents[(i, j)]

    def _scores(self, i: int, noise: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Choice i's candidate scores with one noise draw shared by its candidates: its texts
        against its image, or its text against each of its images (ComVG)."""
        choice, steps = self.data.choices[i], self.scorer.timesteps

        def prepared(latents: torch.Tensor) -> Prepared:
            return Prepared(latents, {t: noise[k][None].to(latents.dtype) for k, t in enumerate(steps)})

        with batch.autocast():
            if isinstance(choice, ImageChoice):
                return torch.cat([self.scorer.score_candidates(None, [choice.text], prepared(self._latent(i, j)),
                                                               prune=False)
                                  for j in range(len(choice.images))])
            return self.scorer.score_candidates(None, list(choice.texts), prepared(self._latent(i)), prune=False)

    def loss(self, batch: Batch) -> torch.Tensor:
        g, steps = batch.generator, self.scorer.timesteps
        idx = batch.indices.tolist()
        shape = self._latent(idx[0]).shape[1:]
        noise = batch.keep(torch.randn((batch.size, len(steps), *shape), generator=g)).to(self.device)
        losses = []
        self.scorer.recorder.learn_heads = True
        try:
            for row, i in enumerate(idx):
                choice = self.data.choices[i]
                s = self._scores(i, noise[row], batch)
                pos = s[choice.answer]
                neg = torch.cat([s[:choice.answer], s[choice.answer + 1:]])
                losses.append(torch.relu(neg - pos + self.options.margin).mean())
        finally:
            self.scorer.recorder.learn_heads = False
        return torch.stack(losses).mean()
