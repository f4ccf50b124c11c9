"""Paired bootstrap test of the difference in FID (or KID) between two models against one reference.

Images are paired by index: image i of model A and image i of model B came from the same prompt and
the same noise. Each resample therefore draws ONE set of sample indices with replacement and applies
it to both models, so the prompt/noise variation that both share cancels in the difference
d* = metric(B[idx]) − metric(A[idx]); the reference statistics (or features) stay fixed. A resample
repeats ~37% of the samples, which raises FID (fewer distinct images) by an amount that differs
between A and B, so the d* sit off-centre from the full-sample difference d (measured on random
features: d = 34.4 with d*'s 95% range 37.0-45.7). The d* are therefore recentred on d,
c* = d* − mean(d*) + d: the test asks whether d stands out of its resampling noise at this n, the
quantity FID comparisons are made at. The result is d = B − A on all samples, the 2.5-97.5
percentiles of c* as its 95% interval, and the smoothed two-sided p-value

    p = min(1, 2 · (1 + min(#{c* ≤ 0}, #{c* ≥ 0})) / (1 + resamples))

never 0 (its floor is 2 / (1 + resamples)), 1 when every d* is 0.

`paired_permutation` is the test for continuous per-sample scores (a CLIPScore per image): a
sign-flip permutation test on the paired differences, whose interval is the percentile interval of
the mean difference over paired bootstrap resamples (a mean has no such resampling bias).

FID per resample without a d×d square root (the Gram route): with F the generated features, Σ_r the
reference covariance and G = F Σ_r Fᵀ (n×n, once per model), the centred resample X = F[idx] − m has
tr √(Σ_g Σ_r) = Σ √λ(X Σ_r Xᵀ / (n−1)), and X Σ_r Xᵀ = G[idx][:, idx] − u 1ᵀ − 1 uᵀ + c 1 1ᵀ with
u = (G w / n)[idx], c = wᵀ G w / n² (w the index counts). A sample drawn w_j times is one row weighted
by √w_j, so the eigenproblem is k×k over the k ≈ 0.63 n distinct indices; when k > d the d×d route
(frechet.trace_sqrt_product) is the cheaper one and is used instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .frechet import FeatureStats, _clip_psd, as_f64, trace_sqrt_product
from .kid import polynomial_kernel

_KERNEL_CHUNK = 2048  # reference rows per kernel block: bounds memory for large reference sets


@dataclass(frozen=True)
class BootstrapDifference:
    a: float            # the metric on all of A's features (not resampled)
    b: float            # the same for B
    difference: float   # b − a
    ci_low: float       # 95% interval of the difference (module docstring)
    ci_high: float
    p_value: float      # two-sided (module docstring)
    resamples: int
    seed: int
    test: str           # a human-readable name of the test


# ---------------------------------------------------------------- shared plumbing

def _check_pair(features_a: Any, features_b: Any, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = as_f64(features_a, "features_a"), as_f64(features_b, "features_b")
    if fa.ndim != 2 or fb.ndim != 2:
        raise ValueError(f"features must be 2-d (n, d), got shapes {fa.shape} and {fb.shape}")
    if fa.shape != fb.shape:
        raise ValueError(f"paired features must have one shape, got {fa.shape} for A and {fb.shape} for B")
    if fa.shape[0] < 2:
        raise ValueError(f"the bootstrap needs at least 2 samples per model, got {fa.shape[0]}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    return fa, fb


def _index_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each sample index is drawn in each resample: (resamples, n), rows summing to n.
    The draws depend on the seed only, and the same draw serves both models (the pairing)."""
    idx = np.random.default_rng((seed, 2)).integers(0, n, size=(resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _summarise(a: float, b: float, diffs: np.ndarray, resamples: int, seed: int) -> BootstrapDifference:
    d = b - a
    centred = diffs - diffs.mean() + d  # the resampling noise about d, without the resampling bias
    lo, hi = np.percentile(centred, [2.5, 97.5])
    tail = min(int(np.count_nonzero(centred <= 0)), int(np.count_nonzero(centred >= 0)))
    p = min(1.0, 2.0 * (1 + tail) / (1 + resamples))
    return BootstrapDifference(a=a, b=b, difference=d, ci_low=float(lo), ci_high=float(hi), p_value=p,
                               resamples=int(resamples), seed=seed,
                               test=f"paired bootstrap over sample indices ({resamples}, recentred), two-sided")


# ---------------------------------------------------------------- FID

class _ResampledFID:
    """FID of index-count-weighted resamples of one feature set against fixed reference statistics."""

    def __init__(self, features: np.ndarray, reference: FeatureStats):
        self.n, self.d = features.shape
        # FID is translation invariant; centring both sides on F's mean keeps |m|² and tr Σ_g free of
        # cancellation when the features sit far from the origin.
        centre = features.mean(axis=0)
        self.f = features - centre
        self.mu_r = np.asarray(reference.mu, np.float64) - centre
        self.sigma_r = np.asarray(reference.sigma, np.float64)
        self.sigma_r = (self.sigma_r + self.sigma_r.T) / 2
        self.tr_r = float(np.trace(self.sigma_r))
        self.sq = np.einsum("ij,ij->i", self.f, self.f)  # |F_i|²
        self.g = self.f @ self.sigma_r @ self.f.T  # the Gram matrix F Σ_r Fᵀ, n×n
        self.g = (self.g + self.g.T) / 2

    def __call__(self, w: np.ndarray) -> float:
        n = self.n
        m = w @ self.f / n
        tr_g = float((w @ self.sq - n * (m @ m)) / (n - 1))  # Σ_j w_j |F_j − m|² / (n − 1)
        diff = m - self.mu_r
        uniq = np.flatnonzero(w)
        if uniq.size <= self.d:
            gw = self.g @ w
            u = gw[uniq] / n
            c = float(w @ gw) / (n * n)
            core = self.g[np.ix_(uniq, uniq)] - u[:, None] - u[None, :] + c
            s = np.sqrt(w[uniq])  # a sample drawn w_j times: one row of weight √w_j in X
            mat = core * s[:, None] * s[None, :] / (n - 1)
            lam = np.linalg.eigvalsh((mat + mat.T) / 2)
            tr_sqrt = float(np.sqrt(_clip_psd(lam, "X Σ_r Xᵀ")).sum())
        else:
            xc = self.f[uniq] - m
            sigma_g = (xc * w[uniq, None]).T @ xc / (n - 1)
            tr_sqrt = trace_sqrt_product(sigma_g, self.sigma_r)
        return float(diff @ diff + tr_g + self.tr_r - 2.0 * tr_sqrt)


def paired_fid_bootstrap(features_a: Any, features_b: Any, reference: FeatureStats, *, resamples: int = 1000,
                         seed: int = 0) -> BootstrapDifference:
    """Paired bootstrap of FID(B) − FID(A) against fixed reference statistics.

    features_a, features_b: (n, d) features of images paired by index (same prompt and noise).
    Each of `resamples` resamples draws n indices with replacement (the same draw for A and B) and
    recomputes both FIDs; p-value and interval as in the module docstring."""
    fa, fb = _check_pair(features_a, features_b, resamples)
    if reference.dim != fa.shape[1]:
        raise ValueError(f"reference statistics have dimension {reference.dim}, features have {fa.shape[1]}")
    fid_a, fid_b = _ResampledFID(fa, reference), _ResampledFID(fb, reference)
    n = fa.shape[0]
    full = np.ones(n)
    a, b = fid_a(full), fid_b(full)
    counts = _index_counts(n, resamples, seed)
    diffs = np.array([fid_b(w) - fid_a(w) for w in counts])
    return _summarise(a, b, diffs, resamples, seed)


# ---------------------------------------------------------------- KID

def _reference_terms(f: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean over the reference of k(F_i, r) for each i, the reference's off-diagonal kernel mean),
    in blocks of reference rows so a large reference set never needs its full kernel matrix."""
    nr = r.shape[0]
    k_gr = np.zeros(f.shape[0])
    rr = 0.0
    for start in range(0, nr, _KERNEL_CHUNK):
        block = r[start:start + _KERNEL_CHUNK]
        k_gr += polynomial_kernel(f, block).sum(axis=1)
        k_rr = polynomial_kernel(block, r)
        rows = np.arange(block.shape[0])
        rr += float(k_rr.sum() - k_rr[rows, start + rows].sum())
    return k_gr / nr, rr / (nr * (nr - 1))


class _ResampledKID:
    """Unbiased MMD² of index-count-weighted resamples of one feature set against fixed reference features."""

    def __init__(self, features: np.ndarray, reference: np.ndarray):
        self.n = features.shape[0]
        self.k_gg = polynomial_kernel(features, features)
        self.diag = np.diag(self.k_gg).copy()
        self.k_gr, self.rr = _reference_terms(features, reference)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """MMD² for each row of counts (resamples, n)."""
        n = self.n
        # Mean of k over positions i ≠ j of the resample: all position pairs minus the diagonal ones.
        # A sample drawn twice pairs with its own duplicate here (k(x, x)), a small bias of the resampled
        # gen-gen term; it is the same for A and B, so the paired difference keeps its meaning.
        pairs = np.einsum("bi,ij,bj->b", counts, self.k_gg, counts, optimize=True)
        gg = (pairs - counts @ self.diag) / (n * (n - 1))
        return gg + self.rr - 2.0 * (counts @ self.k_gr) / n


def paired_kid_bootstrap(features_a: Any, features_b: Any, reference_features: Any, *, resamples: int = 1000,
                         seed: int = 0) -> BootstrapDifference:
    """Paired bootstrap of KID(B) − KID(A) against fixed reference features, with kid.py's cubic kernel.

    `a` and `b` are the unbiased MMD² on all samples (kid.mmd2_unbiased when the reference has n rows;
    for another reference size the reference term is averaged over its own r(r−1) pairs). In each
    resample the gen-gen term averages the kernel over positions i ≠ j, so an index drawn twice
    contributes k(x, x) for its duplicate pairs: the bootstrap's known small bias, identical for A and B.
    p-value and interval as in the module docstring."""
    fa, fb = _check_pair(features_a, features_b, resamples)
    ref = as_f64(reference_features, "reference_features")
    if ref.ndim != 2 or ref.shape[1] != fa.shape[1]:
        raise ValueError(f"reference features must be (n_ref, {fa.shape[1]}), got shape {ref.shape}")
    if ref.shape[0] < 2:
        raise ValueError(f"the reference needs at least 2 samples, got {ref.shape[0]}")
    kid_a, kid_b = _ResampledKID(fa, ref), _ResampledKID(fb, ref)
    full = np.ones((1, fa.shape[0]))
    a, b = float(kid_a(full)[0]), float(kid_b(full)[0])
    counts = _index_counts(fa.shape[0], resamples, seed)
    diffs = kid_b(counts) - kid_a(counts)
    return _summarise(a, b, diffs, resamples, seed)


# ---------------------------------------------------------------- continuous per-sample scores

def paired_permutation(scores_a: Any, scores_b: Any, *, resamples: int = 10_000, seed: int = 0) -> BootstrapDifference:
    """Sign-flip permutation test of mean(B) − mean(A) for per-sample scores paired by index.

    Under the null the two models' scores of a sample are exchangeable, so each paired difference
    keeps its size and takes either sign: p = (1 + #{|mean(s·δ)| ≥ |mean(δ)|}) / (1 + resamples) over
    `resamples` seeded sign vectors s. The interval is the 2.5-97.5 percentiles of the mean
    difference over as many paired bootstrap resamples (the same index draw for both)."""
    a, b = as_f64(scores_a, "scores_a"), as_f64(scores_b, "scores_b")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must be two 1-d arrays of one length, got shapes {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"the permutation test needs at least 2 paired samples, got {a.shape[0]}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    delta = b - a
    n, observed = delta.shape[0], abs(float(delta.mean()))
    rng = np.random.default_rng((seed, 3))
    hits = 0
    for start in range(0, resamples, 1000):  # blocks of sign vectors: bounded memory at any n
        signs = rng.choice((-1.0, 1.0), size=(min(1000, resamples - start), n))
        # a tolerance so that rounding never turns the observed statistic itself into a non-hit
        hits += int(np.count_nonzero(np.abs(signs @ delta) / n >= observed * (1 - 1e-12)))
    p = min(1.0, (1 + hits) / (1 + resamples))
    counts = _index_counts(n, resamples, seed)
    lo, hi = np.percentile(counts @ delta / n, [2.5, 97.5])
    return BootstrapDifference(a=float(a.mean()), b=float(b.mean()), difference=float(delta.mean()),
                               ci_low=float(lo), ci_high=float(hi), p_value=p, resamples=int(resamples), seed=seed,
                               test=f"paired sign-flip permutation ({resamples}), two-sided")
