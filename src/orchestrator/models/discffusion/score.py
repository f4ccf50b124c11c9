"""Scoring (caption, image) pairs with a Stable Diffusion U-Net.

Discffusion: encode the image once (the VAE's mean latent), noise it at each of the chosen
timesteps with noise shared by every candidate caption of that image (so candidates differ only
by their text), run the U-Net on all candidates in one batch, and average the pooled
cross-attention term (capture.py) over the scored layers and the timesteps; optionally add the
public code's noise-error term ‖ε − ε̂_∅‖ − ‖ε − ε̂_c‖ (per-element RMS norms).

Baselines on the same inputs: the Diffusion Classifier (−mean_t ‖ε − ε̂(x_t, t, c)‖², lower error
wins) and DiffusionITM's normalised error (−(err_c − err_∅)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from orchestrator.models.common.shapes_tokenizer import tokenize

from .capture import AttentionRecorder, cross_attention_layers, install, scored_layers
from .options import DiscffusionOptions


def timesteps(options: DiscffusionOptions, num_train_timesteps: int = 1000) -> list[int]:
    """The paper's relative noise levels, or the public code's t = 999 − i, i in range(10, 990, 1000 // S)."""
    if options.timestep_count:
        return [999 - i for i in range(10, 990, 1000 // options.timestep_count)]
    return [min(num_train_timesteps - 1, round(level * num_train_timesteps)) for level in options.noise_levels]


def pixels_of(image: Any, resolution: int) -> torch.Tensor:
    """An image (PIL, or [3, H, W] floats in [0, 1]) as [3, R, R] in [−1, 1]: short side resized,
    centre-cropped, as training data is."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        t = image.float()
        if t.shape[-1] != resolution or t.shape[-2] != resolution:
            t = torch.nn.functional.interpolate(t[None], size=(resolution, resolution), mode="bilinear",
                                                align_corners=False)[0]
        return t * 2 - 1
    if not isinstance(image, Image.Image):
        raise TypeError(f"cannot score an image of type {type(image).__name__} (PIL or a tensor)")
    im = image.convert("RGB")
    w, h = im.size
    s = resolution / min(w, h)
    im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    left, top = (im.size[0] - resolution) // 2, (im.size[1] - resolution) // 2
    arr = np.asarray(im.crop((left, top, left + resolution, top + resolution)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


@dataclass
class Prepared:
    latents: torch.Tensor   # [1, C, h, w]
    noise: dict[int, torch.Tensor]


class DiffusionScorer:
    """`score_pairs(captions, images)` → one float per pair, higher = better fit.

    `method`: "discffusion" (cross-attention), "diffusion_classifier" or "diffusion_itm"."""

    def __init__(self, c, options: DiscffusionOptions | None = None, *, method: str = "discffusion",
                 adapters: torch.nn.ModuleDict | None = None):
        if method not in ("discffusion", "diffusion_classifier", "diffusion_itm"):
            raise ValueError(f"unknown scoring method {method!r}")
        self.c, self.options, self.method = c, options or DiscffusionOptions(), method
        self.recorder = AttentionRecorder(self.options.pooling, self.options.lam, self.options.attention,
                                 attribution_steps=self.options.head_attribution_steps)
        names = cross_attention_layers(c.unet)
        self._layers, self._scored, self._adapters = names, scored_layers(names, self.options.layers), adapters
        self._install()
        self.timesteps = timesteps(self.options, int(c.scheduler.config.num_train_timesteps))
        self.resolution = int(c.vae.config.sample_size)

    def _install(self) -> None:
        """Our processors on the U-Net — again if another scorer of the same U-Net replaced them."""
        current = self.c.unet.attn_processors.get(f"{self._layers[0]}.processor") if self._layers else None
        if getattr(current, "recorder", None) is not self.recorder:
            install(self.c.unet, self.recorder, self._scored, self._adapters)

    @property
    def name(self) -> str:
        return self.method

    # ---- inputs --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: Any) -> torch.Tensor:
        """[1, C, h, w]: the image's mean latent, scaled as the U-Net sees latents."""
        x = pixels_of(image, self.resolution)[None].to(self.c.unet.device, self.c.vae.dtype)
        return self.c.vae.encode(x).latent_dist.mean * self.c.latent_scale

    def _prepare(self, image: Any) -> Prepared:
        dev = self.c.unet.device
        latents = self.encode(image)
        noise = {}
        for t in self.timesteps:  # the same noise for every candidate of this image, whatever the batch
            g = torch.Generator().manual_seed(self.options.seed * 1_000_003 + t)
            noise[t] = torch.randn(latents.shape, generator=g).to(dev, latents.dtype)
        return Prepared(latents, noise)

    def _text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.c.tokenizer
        ids = tokenize(tok, captions).to(self.c.text_encoder.device)
        mask = ids != tok.pad_token_id if tok.pad_token_id is not None else torch.ones_like(ids, dtype=torch.bool)
        if tok.pad_token_id == tok.eos_token_id:  # CLIP's tokenizer pads with the end token: keep the first
            first_end = (ids == tok.eos_token_id).int().argmax(-1)
            mask = torch.arange(ids.shape[1], device=ids.device)[None] <= first_end[:, None]
        return self.c.text_encoder(ids)[0], mask

    # ---- the score of one image's candidates -----------------------------------------------
    def score_candidates(self, image: Any, captions: Sequence[str], prepared: Prepared | None = None,
                         prune: bool = True) -> torch.Tensor:
        """[len(captions)] scores, candidates batched (`options.batch_size` per U-Net pass); with
        `prune_keep` below the number of candidates, adaptively pruned (`_pruned`) unless `prune`
        is false (training scores every candidate everywhere)."""
        self._install()
        p = prepared or self._prepare(image)
        keep = self.options.prune_keep
        if prune and keep is not None and keep < len(captions) and self.options.prune_steps < len(self.timesteps):
            return self._pruned(p, list(captions), keep)
        return self._mean(self._terms(p, list(captions), self.timesteps))

    def _terms(self, p: Prepared, captions: list[str], steps: Sequence[int]) -> dict[int, torch.Tensor]:
        """Each timestep's term of every caption's score, the captions in batches."""
        bs = self.options.batch_size
        parts = [self._score_batch(p, captions[i:i + bs], steps) for i in range(0, len(captions), bs)]
        return {t: torch.cat([part[t] for part in parts]) for t in steps}

    def _mean(self, terms: dict[int, torch.Tensor]) -> torch.Tensor:
        """The score: the terms summed in the timestep set's order, over its size."""
        total = torch.zeros_like(next(iter(terms.values())))
        for t in self.timesteps:
            total = total + terms[t]
        return total / len(self.timesteps)

    def _pruned(self, p: Prepared, captions: list[str], keep: int) -> torch.Tensor:
        """The Diffusion Classifier's adaptive evaluation: every candidate on `prune_steps` evenly
        spread timesteps, the best `keep` on the remaining ones. A kept candidate's score is its
        full evaluation's, exactly (the same terms summed in the same order); a pruned one ranks
        below every kept one, in its first-stage order."""
        n_first = self.options.prune_steps
        idx = sorted({round(i * (len(self.timesteps) - 1) / max(1, n_first - 1)) for i in range(n_first)})
        first = [self.timesteps[i] for i in idx]
        terms = self._terms(p, captions, first)
        early = torch.stack([terms[t] for t in first]).sum(0) / len(first)
        kept = torch.topk(early, keep).indices.sort().values
        rest = self._terms(p, [captions[i] for i in kept.tolist()],
                           [t for t in self.timesteps if t not in set(first)])
        full = self._mean({**{t: terms[t][kept] for t in first}, **rest})
        pruned = torch.ones(len(captions), dtype=torch.bool, device=early.device)
        pruned[kept] = False
        out = early.clone()
        out[kept] = full
        out[pruned] = early[pruned] - (early[pruned].max() - full.min()) - 1.0
        return out

    def _score_batch(self, p: Prepared, captions: list[str], steps: Sequence[int]) -> dict[int, torch.Tensor]:
        o, unet, sched = self.options, self.c.unet, self.c.scheduler
        n = len(captions)
        text, mask = self._text(captions)
        need_uncond = self.method == "diffusion_itm" or (self.method == "discffusion" and o.noise_error > 0)
        uncond = self._text([""])[0] if need_uncond else None
        terms: dict[int, torch.Tensor] = {}
        for t in steps:
            tt = torch.full((n,), t, device=unet.device, dtype=torch.long)
            noise = p.noise[t].expand(n, -1, -1, -1)
            noisy = sched.add_noise(p.latents.expand(n, -1, -1, -1), noise, tt)
            self.recorder.values.clear()
            self.recorder.token_mask = None if o.tokens == "all" else mask
            self.recorder.active = self.method == "discffusion"
            term = torch.zeros(n, device=unet.device)
            try:
                eps = unet(noisy, tt, encoder_hidden_states=text.to(unet.dtype)).sample.float()
                self.recorder.active = False
                if self.method == "discffusion":
                    attn = torch.stack(self.recorder.values).mean(0)
                    if o.reduce == "batch":
                        attn = attn.mean().expand(n)
                    term = term + attn
                err_c = (eps - noise.float()).pow(2).mean(dim=(1, 2, 3))
                if self.method == "diffusion_classifier":
                    term = term - err_c
                elif uncond is not None:
                    eps_u = unet(noisy[:1], tt[:1], encoder_hidden_states=uncond.to(unet.dtype)).sample.float()
                    err_u = (eps_u - noise[:1].float()).pow(2).mean(dim=(1, 2, 3))
                    if self.method == "diffusion_itm":
                        term = term - (err_c - err_u)
                    else:
                        term = term + o.noise_error * (err_u.sqrt() - err_c.sqrt())
            finally:
                self.recorder.active = False
                self.recorder.values.clear()
            terms[t] = term
        return terms

    # ---- the scorer interface the suites call --------------------------------------------------
    @torch.no_grad()
    def score_pairs(self, captions: Sequence[str], images: Sequence[Any]) -> np.ndarray:
        """Pairs grouped by image (the same object = the same image): each image encoded once, its
        candidate captions scored together with shared noise."""
        if len(captions) != len(images):
            raise ValueError(f"{len(captions)} captions for {len(images)} images")
        groups: dict[int, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(id(im), []).append(i)
        out = np.zeros(len(captions), dtype=np.float64)
        for idx in groups.values():
            scores = self.score_candidates(images[idx[0]], [captions[i] for i in idx])
            out[idx] = scores.double().cpu().numpy()
        return out
