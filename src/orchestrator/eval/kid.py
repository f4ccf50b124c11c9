"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"), in float64.

KID is the squared maximum mean discrepancy between two feature sets under the cubic polynomial
kernel k(x, y) = (xᵀy / d + 1)³, estimated without bias:

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / m(m−1) + Σ_{i≠j} k(y_i, y_j) / m(m−1) − 2 Σ_{i,j} k(x_i, y_j) / m²

Unlike FID it has no bias that depends on n (so it can be compared across sample sizes, and it is
negative about half the time when both sets come from one distribution). As torch-fidelity and
clean-fid do, it is averaged over `subsets` random subsets of size m = min(n_x, n_y, 1000), each
drawn without replacement (seeded), and reported with the std over those subsets. When m equals
both set sizes every subset is the whole of both sets, so one is computed (std 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .frechet import as_f64

DEFAULT_SUBSETS = 100      # torch-fidelity's kid_subsets and clean-fid's num_subsets
MAX_SUBSET_SIZE = 1000     # torch-fidelity's kid_subset_size and clean-fid's max_subset_size


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float            # over subsets (population std, as torch-fidelity reports)
    subsets: int          # subsets computed
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³ for every row pair: [n_x, n_y]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of two equal-size feature sets under the cubic kernel."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"needs two sets of one size >= 2, got {x.shape[0]} and {y.shape[0]}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2.0 * k_xy.sum() / (m * m))


def kid(x: Any, y: Any, *, subsets: int = DEFAULT_SUBSETS, max_subset_size: int = MAX_SUBSET_SIZE,
        seed: int = 0) -> KIDResult:
    """KID between feature sets x [n_x, d] and y [n_y, d] (mean and std over seeded subsets)."""
    x, y = as_f64(x, "x"), as_f64(y, "y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features of shape (n, d) with one d, got {x.shape} and {y.shape}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(len(x), len(y), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    if m == len(x) == len(y):
        return KIDResult(mmd2_unbiased(x, y), 0.0, 1, m)
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                                     y[rng.choice(len(y), m, replace=False)]) for _ in range(subsets)])
    return KIDResult(float(values.mean()), float(values.std()), subsets, m)
