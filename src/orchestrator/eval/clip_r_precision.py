"""CLIP-R-Precision (Park et al. 2021, "Benchmark for Compositional Text-to-Image Synthesis").

Per generated image: 100 candidate captions, its own prompt plus 99 captions sampled (without
replacement, seeded) from the other captions of the evaluation set; the image counts as a hit when
CLIP scores its own caption strictly above all 99. R@1 is reported as the paper's code reports it:
the per-image outcomes shuffled (here seeded), cut into 10 chunks of ⌊N/10⌋ images (the N mod 10
left over are not in any chunk), and the mean ± population std (ddof 0) of the chunks' R@1.

Ties: an image whose own caption ties with a negative is a miss (it did not rank first). The
paper's code takes an argmax, which leaves a tie to the order of the candidates; the project's rule
is the conservative one and does not depend on that order. Each result's info says both
conventions (CHUNKING, TIES).

One deviation, kept because the shapes world needs it: negatives are sampled among captions whose
text differs from the image's own. COCO captions almost never repeat, but shapes captions do
("a red circle"), and an identical caption drawn as a "negative" would be an unwinnable tie.

Best-of-K (Lin & Srikanth's re-ranking): generate K images per prompt and keep the one CLIP
scores highest against that prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from .stats import wilson_interval

NEGATIVES = 99
CHUNKS = 10
CHUNKING = "shuffled (seeded), chunks of floor(N/chunks), population std (Park et al.'s code)"
TIES = "a tie with a negative is a miss"


@dataclass(frozen=True)
class RPrecision:
    value: float                 # mean R@1 over the chunks
    std: float                   # std of the chunk R@1s (ddof=0)
    chunk_values: tuple[float, ...]
    hits: int
    n: int                       # images scored
    ci: tuple[float, float]      # 95% Wilson interval of hits / n
    candidates: int              # captions ranked per image (1 + negatives)
    outcomes: tuple[bool, ...] = ()


def sample_negatives(own: Sequence[int], pool_texts: Sequence[str], n_negatives: int = NEGATIVES,
                     seed: int = 0) -> np.ndarray:
    """[N, n_negatives] indices into the caption pool: for image i, distinct captions whose text
    differs from pool_texts[own[i]], drawn in image order from one seeded generator."""
    codes = np.unique(np.asarray(pool_texts, dtype=object).astype(str), return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    out = np.empty((len(own), n_negatives), dtype=np.int64)
    for i, k in enumerate(own):
        pool = np.flatnonzero(codes != codes[k])
        if len(pool) < n_negatives:
            raise ValueError(f"image {i}: only {len(pool)} captions in the pool differ from its own "
                             f"({pool_texts[k]!r}); R-precision needs {n_negatives} negatives: use a larger "
                             f"caption pool or fewer negatives")
        out[i] = rng.choice(pool, size=n_negatives, replace=False)
    return out


def chunk_stats(outcomes: np.ndarray, chunks: int = CHUNKS, seed: int = 0) -> tuple[float, float, tuple[float, ...]]:
    """(mean, population std, per-chunk values) of `outcomes` shuffled by `seed` and cut into
    `chunks` chunks of ⌊N/chunks⌋, as the reference does: a chunk's value does not depend on the
    order the images were generated in."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    size = len(outcomes) // chunks
    if size == 0:
        raise ValueError(f"{len(outcomes)} images cannot be split into {chunks} chunks")
    # Its own stream ((seed, 1)), apart from the negatives' (seed): the two draws stay independent.
    shuffled = outcomes[np.random.default_rng((seed, 1)).permutation(len(outcomes))]
    values = tuple(float(shuffled[i * size:(i + 1) * size].mean()) for i in range(chunks))
    return float(np.mean(values)), float(np.std(values)), values


def r_precision(scores: np.ndarray, own: Sequence[int], pool_texts: Sequence[str], *,
                n_negatives: int = NEGATIVES, chunks: int = CHUNKS, seed: int = 0) -> RPrecision:
    """R@1 from a score matrix [N images, P pool captions]; image i's caption is pool index own[i]."""
    scores = np.asarray(scores, dtype=np.float64)
    own = np.asarray(own, dtype=np.int64)
    if scores.ndim != 2 or scores.shape != (len(own), len(pool_texts)):
        raise ValueError(f"scores must be [{len(own)} images, {len(pool_texts)} captions], got {scores.shape}")
    negs = sample_negatives(own, pool_texts, n_negatives, seed)
    rows = np.arange(len(own))
    positive = scores[rows, own]
    hits = positive > scores[rows[:, None], negs].max(axis=1)
    mean, std, values = chunk_stats(hits, chunks, seed)
    k = int(hits.sum())
    return RPrecision(mean, std, values, k, len(own), wilson_interval(k, len(own)), n_negatives + 1,
                      tuple(bool(h) for h in hits))


class PairScorer(Protocol):
    def score_pairs(self, captions: Sequence[str], images: Any) -> np.ndarray: ...


def clip_r_precision(encoder: Any, images: Any, prompts: Sequence[str], pool_texts: Sequence[str] | None = None,
                     own: Sequence[int] | None = None, **kw: Any) -> RPrecision:
    """R@1 of images against their prompts with a CLIP encoder (`encode_texts`, `encode_images`).

    `pool_texts` defaults to the prompts themselves (image i's caption is pool index i).
    """
    pool = list(prompts) if pool_texts is None else list(pool_texts)
    own = list(range(len(prompts))) if own is None else list(own)
    if any(pool[k] != p for k, p in zip(own, prompts)):
        raise ValueError("own[i] must index image i's prompt in the caption pool")
    t = encoder.encode_texts(pool).double()
    v = encoder.encode_images(images).double()
    return r_precision((v @ t.T).numpy(), own, pool, **kw)


def best_of_k(scorer: PairScorer, prompts: Sequence[str], candidates: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """From candidates [K, N, 3, H, W] (K images per prompt), the image per prompt the scorer ranks
    highest with its prompt: ([N, 3, H, W], chosen index per prompt)."""
    k, n = candidates.shape[:2]
    if n != len(prompts):
        raise ValueError(f"{n} candidates per round for {len(prompts)} prompts")
    flat = candidates.reshape(k * n, *candidates.shape[2:])
    scores = np.asarray(scorer.score_pairs(list(prompts) * k, flat)).reshape(k, n)
    pick = scores.argmax(axis=0)
    return candidates[torch.from_numpy(pick), torch.arange(n)], pick


class ClipRPrecisionSuite:
    """R@1 of the generated images among their prompt and 99 other held-out captions."""
    name = "clip_r_precision"

    def requirements(self, ctx: Any) -> list[str]:
        return ctx.generation_problems(self.name) + ctx.clip_problems(self.name)

    def run(self, ctx: Any):
        import time

        from .results import OUTCOMES, MetricValue, SuiteResult, bits

        started = time.perf_counter()
        o = ctx.options
        prompts = [p.text for p in ctx.prompts()]
        pool = [h.prompt.text for h in ctx.heldout(max(o.r_precision_pool, len(prompts)))]
        enc = ctx.clip()
        res = clip_r_precision(enc, ctx.generated(), prompts, pool_texts=pool, own=range(len(prompts)),
                               n_negatives=o.r_precision_negatives, chunks=o.r_precision_chunks, seed=o.seed)
        metric = MetricValue("r_at_1", res.value, res.n, res.ci[0], res.ci[1], res.std)
        info = {"clip": enc.name, "hits": res.hits, "candidates": res.candidates, "chunks": list(res.chunk_values),
                "chunking": CHUNKING, "ties": TIES, "pool": len(pool), OUTCOMES: {"r_at_1": bits(res.outcomes)},
                **ctx.generation_info}
        return SuiteResult(self.name, [metric], info, time.perf_counter() - started)
