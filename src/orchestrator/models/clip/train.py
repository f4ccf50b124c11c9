"""Contrastive training of the tiny shapes-world CLIP (CLIP's symmetric InfoNCE loss).

Each training example is a shapes image with one of its captions (spatial, generic or counting,
drawn per step). Where the scene has a Winoground pair, it comes with its spatial caption, and the
swapped image with the swapped caption joins the batch as an example of its own, so the batch holds
the hard negatives Winoground tests: same words, roles exchanged. In-batch, 63 easy negatives
drown those out, so a second term (weight `pair_weight`) is the same cross-entropy on each pair's
own 2x2 block: the group test of Winoground as a loss (as NegCLIP adds swapped-caption negatives).
Captions repeated within a batch ("a red circle" twice) are positives for every image they
describe (soft targets), not false negatives.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from orchestrator.data.shapes import make_example, render

from .encoder import ClipEncoder, Preprocess, save_clip
from .tiny import build_tiny_clip, preprocessor_config

log = logging.getLogger(__name__)
STYLES = ("spatial", "generic", "counting")


@dataclass
class ClipTrainData:
    images: torch.Tensor          # uint8 [M, 3, H, W]: the n scenes, then the swapped images
    captions: list[list[str]]     # per image, the captions it may be paired with
    partner: np.ndarray           # index of the Winoground partner image, or -1
    n_scenes: int

    def __len__(self) -> int:
        return len(self.captions)


def shapes_clip_data(n: int, seed: int, size: int = 32) -> ClipTrainData:
    """Scenes 0..n-1 of the shapes world with `seed`, plus the swapped image of every Winoground pair."""
    images, captions, partner = [], [], []
    extra_images, extra_caps = [], []
    for i in range(n):
        ex = make_example(seed, i, size)
        images.append(np.asarray(ex.image()))
        captions.append(list(dict.fromkeys(getattr(ex, s) for s in STYLES)))
        if ex.pair is not None:
            partner.append(n + len(extra_images))
            extra_images.append(np.asarray(render(ex.pair.scene_1)))
            extra_caps.append([ex.pair.caption_1])
        else:
            partner.append(-1)
    partner += [i for i, p in enumerate(partner) if p >= 0]  # each swapped image points back
    pixels = torch.from_numpy(np.stack(images + extra_images)).permute(0, 3, 1, 2).contiguous()
    return ClipTrainData(pixels, captions + extra_caps, np.asarray(partner), n)


def _symmetric_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, -1), -1).mean()
                  + torch.sum(-target * F.log_softmax(logits.transpose(-1, -2), -1), -1).mean())


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, texts: list[str],
                     pairs: list[tuple[int, int]] | None = None, pair_weight: float = 1.0) -> torch.Tensor:
    """Symmetric cross-entropy over cosine logits; identical texts share the target mass.
    `pairs` (i, j): batch rows holding a Winoground pair, also scored on their own 2x2 block."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T
    codes = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([codes[t] for t in texts], device=img.device)
    same = (ids[:, None] == ids[None, :]).float()
    loss = _symmetric_ce(logits, same / same.sum(1, keepdim=True))
    if pairs and pair_weight:
        idx = torch.tensor(pairs, device=img.device)  # [P, 2]
        block = logits[idx[:, :, None], idx[:, None, :]]  # [P, 2, 2]: rows images, columns captions
        eye = torch.eye(2, device=img.device).expand_as(block)
        loss = loss + pair_weight * _symmetric_ce(block, eye)
    return loss


@dataclass
class ClipTrainResult:
    steps: int
    first_loss: float
    final_loss: float
    losses: list[float] = field(repr=False)
    wall_s: float
    saved_to: str | None


class ClipTrainer:
    def __init__(self, data: ClipTrainData, *, seed: int = 0, lr: float = 2e-3, weight_decay: float = 0.1,
                 batch_size: int = 64, pair_weight: float = 1.0, device: str | torch.device = "cpu"):
        all_captions = [c for caps in data.captions for c in caps]
        size = int(data.images.shape[-1])
        model, tokenizer = build_tiny_clip(seed, size, all_captions)
        self.encoder = ClipEncoder(model, tokenizer, Preprocess.from_config(preprocessor_config(size)),
                                   "tiny-shapes-clip", device)
        self.data, self.batch_size, self.pair_weight = data, batch_size, pair_weight
        self.rng = np.random.default_rng(seed)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def sample_batch(self) -> tuple[torch.Tensor, list[str], list[tuple[int, int]]]:
        """Up to batch_size images: scenes in random order, each followed by its Winoground partner
        (if it has one, both with their spatial captions); and the batch positions of the pairs."""
        picked: list[int] = []
        texts: list[str] = []
        pairs: list[tuple[int, int]] = []
        for i in self.rng.permutation(self.data.n_scenes):
            p = int(self.data.partner[i])
            if len(picked) + (2 if p >= 0 else 1) > self.batch_size:
                break
            caps = self.data.captions[i]
            if p >= 0:  # caption 0 of a pair is the scene's spatial caption, listed first
                pairs.append((len(picked), len(picked) + 1))
                picked += [int(i), p]
                texts += [caps[0], self.data.captions[p][0]]
            else:
                picked.append(int(i))
                texts.append(caps[self.rng.integers(len(caps))])
        return self.data.images[picked], texts, pairs

    def loss_on(self, images: torch.Tensor, texts: list[str],
                pairs: list[tuple[int, int]] | None = None) -> torch.Tensor:
        e = self.encoder
        return contrastive_loss(e.image_features(images), e.text_features(texts), e.model.logit_scale, texts,
                                pairs, self.pair_weight)

    def step(self) -> float:
        self.encoder.model.train()
        images, texts, pairs = self.sample_batch()
        loss = self.loss_on(images, texts, pairs)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.encoder.model.parameters(), 1.0)
        self.opt.step()
        self.encoder.model.eval()
        return loss.item()


def train_tiny_clip(out: str | Path | None, steps: int = 3000, seed: int = 0, *, n: int = 4000, size: int = 32,
                    batch_size: int = 64, lr: float = 2e-3, pair_weight: float = 1.0, store: Any = None,
                    data_seed: int = 0,
                    on_step: Callable[[int, float], None] | None = None) -> tuple[ClipEncoder, ClipTrainResult]:
    """Train the tiny CLIP on `n` shapes scenes (dataset seed `data_seed`) and save it in
    transformers' format to `out` (a local directory, or a blob prefix in `store`; None: not saved).

    Evaluate it on scenes of another dataset seed than `data_seed`: those are held out (what the
    defaults reach on Winoground's shapes pairs, and in what time: docs/measurements.md).
    """
    started = time.perf_counter()
    trainer = ClipTrainer(shapes_clip_data(n, data_seed, size), seed=seed, lr=lr, batch_size=batch_size,
                          pair_weight=pair_weight)
    losses = []
    for s in range(1, steps + 1):
        losses.append(trainer.step())
        if on_step is not None:
            on_step(s, losses[-1])
        if s % 100 == 0:
            log.info("tiny CLIP step %d/%d loss %.4f", s, steps, float(np.mean(losses[-100:])))
    saved = save_clip(trainer.encoder, out, store) if out is not None else None
    result = ClipTrainResult(steps, losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"),
                             losses, time.perf_counter() - started, saved)
    return trainer.encoder, result
