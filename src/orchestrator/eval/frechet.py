"""The Fréchet distance between two Gaussians, and streaming float64 feature statistics.

    d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2)

`tr √(Σ1 Σ2)` is computed without a general (non-symmetric) matrix square root. For any factor B
with Σ1 = B Bᵀ, Σ1 Σ2 = B (Bᵀ Σ2) has the same non-zero eigenvalues as Bᵀ Σ2 B, which is symmetric
PSD, so the trace is Σ √λ_i(Bᵀ Σ2 B): one factorisation and one symmetric eigenvalue solve
(LAPACK syevd) replace scipy.linalg.sqrtm's complex Schur form, many times faster at d = 2048 and
free of the spurious imaginary parts sqrtm returns. B is the Cholesky factor (the cheapest) when
Σ1 or Σ2 is positive definite, else the eigen-factor V diag(√w) of Σ1.

Singular covariances (fewer samples than dimensions) are handled exactly by the eigen-factor:
rounding makes their zero eigenvalues tiny and of either sign, and those are clipped to 0. Only if
an eigen-decomposition fails to converge or gives non-finite values do we fall back to adding
`eps`·I to both covariances (pytorch-fid's remedy for a singular product), and say so in a warning.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EPS = 1e-6
# Eigenvalues below -NEG_TOL·max|λ| mean the input was not a covariance matrix, not rounding.
NEG_TOL = 1e-6


def as_f64(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values")
    return arr


def _clip_psd(eigvals: np.ndarray, what: str) -> np.ndarray:
    scale = float(np.max(np.abs(eigvals))) if eigvals.size else 0.0
    if eigvals.size and eigvals.min() < -NEG_TOL * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(f"{what} is not positive semi-definite (eigenvalue {eigvals.min():.3g}, "
                         f"largest {scale:.3g}); is it a covariance matrix?")
    return np.clip(eigvals, 0.0, None)


def _factor(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, other) with B Bᵀ one of the two covariances: Cholesky where one is positive definite."""
    for a, other in ((sigma1, sigma2), (sigma2, sigma1)):
        try:
            return np.linalg.cholesky(a), other
        except np.linalg.LinAlgError:
            continue
    w, v = np.linalg.eigh(sigma1)
    return v * np.sqrt(_clip_psd(w, "sigma1")), sigma2


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr √(Σ1 Σ2) for symmetric PSD Σ1, Σ2 = Σ √λ(Bᵀ Σ2 B) with Σ1 = B Bᵀ."""
    s1 = (sigma1 + sigma1.T) / 2  # symmetrise: the solvers read one triangle only
    s2 = (sigma2 + sigma2.T) / 2
    b, other = _factor(s1, s2)
    m = b.T @ other @ b
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(_clip_psd(lam, "Bᵀ Σ2 B")).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, eps: float = DEFAULT_EPS) -> float:
    """Squared Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), in float64."""
    mu1, mu2 = as_f64(mu1, "mu1").ravel(), as_f64(mu2, "mu2").ravel()
    sigma1, sigma2 = np.atleast_2d(as_f64(sigma1, "sigma1")), np.atleast_2d(as_f64(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, "
                         f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    try:
        tr_covmean = trace_sqrt_product(sigma1, sigma2)
        if not np.isfinite(tr_covmean):
            raise np.linalg.LinAlgError("non-finite trace")
    except np.linalg.LinAlgError as exc:
        msg = f"Fréchet distance: eigen-decomposition failed ({exc}); adding {eps:g}·I to both covariances"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        offset = eps * np.eye(d)
        tr_covmean = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# ---------------------------------------------------------------- statistics

@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set; `n` is None for files that do not record it
    (pytorch-fid's precomputed .npz files hold only mu and sigma)."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None

    def __post_init__(self) -> None:
        d = self.mu.shape[0]
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"stats need mu (d,) and sigma (d, d), got {self.mu.shape} and {self.sigma.shape}")

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def save(self, dest: str | os.PathLike[str] | BinaryIO) -> None:
        """An .npz with mu, sigma (float64) and n (-1 when unknown), at exactly the path given."""
        if isinstance(dest, (str, os.PathLike)):
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:  # np.savez would append ".npz" to a bare name
                self.save(f)
            return
        np.savez(dest, mu=self.mu, sigma=self.sigma, n=np.int64(-1 if self.n is None else self.n))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.save(buf)
        return buf.getvalue()

    @classmethod
    def load(cls, src: str | os.PathLike[str] | BinaryIO | bytes) -> "FeatureStats":
        where = "bytes" if isinstance(src, bytes) else str(getattr(src, "name", src))
        if isinstance(src, bytes):
            src = io.BytesIO(src)
        elif isinstance(src, (str, os.PathLike)) and not Path(src).is_file():
            raise FileNotFoundError(f"no statistics file at {src}")
        with np.load(src, allow_pickle=False) as z:
            missing = {"mu", "sigma"} - set(z.files)
            if missing:
                raise ValueError(f"{where} is not a statistics file: it lacks {sorted(missing)} (has {z.files})")
            n = int(z["n"]) if "n" in z.files else -1
            return cls(np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64), None if n < 0 else n)


def distance(a: FeatureStats, b: FeatureStats, *, eps: float = DEFAULT_EPS) -> float:
    if a.dim != b.dim:
        raise ValueError(f"statistics of different feature sizes: {a.dim} vs {b.dim}")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, eps=eps)


def distance_to_sample(a: FeatureStats, x: Any) -> float:
    """`distance(a, statistics of the rows of x)`, with x's centred rows as the factor of its
    covariance (Σx = B Bᵀ, B = (x − x̄)ᵀ / √(n − 1)): an n×n eigenproblem instead of a d×d one,
    which makes many distances to resampled references cheap when n < d."""
    x = as_f64(x, "features")
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != a.dim or n < 2:
        raise ValueError(f"expected at least 2 features of size {a.dim}, got {x.shape}")
    mu = x.mean(axis=0)
    if n > a.dim:
        return distance(a, FeatureStats(mu, np.cov(x, rowvar=False), n))
    b = (x - mu).T / np.sqrt(n - 1)
    m = b.T @ a.sigma @ b
    tr_covmean = float(np.sqrt(_clip_psd(np.linalg.eigvalsh((m + m.T) / 2), "Bᵀ Σ B")).sum())
    diff = a.mu - mu
    return float(diff @ diff + np.trace(a.sigma) + np.sum(b * b) - 2.0 * tr_covmean)


class RunningStats:
    """Streaming mean and covariance in float64 (Chan et al.'s pairwise update), so features can
    be dropped batch by batch: memory is O(d²) whatever the number of images."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros((dim, dim), np.float64)  # Σ (x − mean)(x − mean)ᵀ

    def update(self, features: Any) -> "RunningStats":
        x = as_f64(features, "features")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (batch, {self.dim}), got {x.shape}")
        nb = x.shape[0]
        if nb == 0:
            return self
        mb = x.mean(axis=0)
        xc = x - mb
        self._combine(nb, mb, xc.T @ xc)
        return self

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Fold in another accumulator (e.g. one per worker)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of dim {other.dim} into dim {self.dim}")
        if other.n:
            self._combine(other.n, other.mean, other.m2)
        return self

    def _combine(self, nb: int, mb: np.ndarray, m2b: np.ndarray) -> None:
        n = self.n + nb
        delta = mb - self.mean
        self.m2 += m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    @property
    def mu(self) -> np.ndarray:
        return self.mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (denominator n − 1), as numpy.cov and pytorch-fid compute it."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, have {self.n}")
        return self.m2 / (self.n - 1)

    def stats(self) -> FeatureStats:
        return FeatureStats(self.mu, self.sigma, self.n)

    def save(self, dest: str | os.PathLike[str] | BinaryIO) -> None:
        self.stats().save(dest)
