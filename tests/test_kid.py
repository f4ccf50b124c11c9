"""KID against a naive O(n²) double loop, and its unbiasedness on samples of one distribution."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.eval.kid import kid, mmd2_unbiased


def _naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al.'s estimator term by term, with the kernel written out."""
    m, d = x.shape

    def k(a, b):
        return (sum(float(a[t]) * float(b[t]) for t in range(d)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_matches_the_naive_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)) * 1.3 + 0.4
    assert mmd2_unbiased(x, y) == pytest.approx(_naive_mmd2(x, y), rel=1e-12, abs=1e-12)
    whole = kid(x, y)  # m equals both sizes: the whole sets, once
    assert (whole.mean, whole.std, whole.subsets, whole.subset_size) == (pytest.approx(_naive_mmd2(x, y)), 0.0, 1, 9)


def test_subsets_are_seeded_naive_means():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((14, 4)), rng.standard_normal((11, 4)) + 0.5
    r = kid(x, y, subsets=5, max_subset_size=6, seed=3)
    pick = np.random.default_rng(3)
    want = [_naive_mmd2(x[pick.choice(14, 6, replace=False)], y[pick.choice(11, 6, replace=False)]) for _ in range(5)]
    assert r.subset_size == 6 and r.subsets == 5
    assert r.mean == pytest.approx(np.mean(want), rel=1e-10) and r.std == pytest.approx(np.std(want), rel=1e-10)
    assert kid(x, y, subsets=5, max_subset_size=6, seed=3) == r


def test_zero_mean_on_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(2)
    mix = rng.standard_normal((16, 16)) / 4
    draw = lambda n, shift=0.0: rng.standard_normal((n, 16)) @ mix + shift  # noqa: E731
    a, b = draw(400), draw(300)
    same = kid(a, b, subsets=50, max_subset_size=100, seed=0)
    # unbiased: centred on 0 (either sign), within a few standard errors of the subset mean
    assert abs(same.mean) < 4 * same.std / np.sqrt(50) + 1e-3
    shifts = [kid(a, draw(300, s), subsets=20, max_subset_size=100, seed=0).mean for s in (0.1, 0.3, 1.0)]
    assert same.mean < shifts[0] < shifts[1] < shifts[2]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="one d"):
        kid(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 3)), np.zeros((4, 3)))
