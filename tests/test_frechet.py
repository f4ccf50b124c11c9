"""Fréchet distance and streaming statistics, checked against independent numpy/scipy computations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from orchestrator.eval import frechet
from orchestrator.eval.frechet import FeatureStats, RunningStats, distance, frechet_distance


def _features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)  # correlated features, as real ones are
    return (rng.standard_normal((n, d)) @ mix) * scale + shift


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook route (pytorch-fid's): np.cov and scipy.linalg.sqrtm of the product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _stream(x: np.ndarray, sizes=(7, 1, 50, 13)) -> RunningStats:
    rs, i, k = RunningStats(x.shape[1]), 0, 0
    while i < len(x):
        b = sizes[k % len(sizes)]
        rs.update(x[i:i + b].astype(np.float32) if k % 2 else x[i:i + b])  # float32 batches too
        i, k = i + b, k + 1
    return rs


def test_running_stats_match_numpy():
    x = _features(0, 333, 24, shift=3.0)
    rs = RunningStats(24)
    for i in range(0, len(x), 40):
        rs.update(x[i:i + 40])
    np.testing.assert_allclose(rs.mu, x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rs.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)
    assert rs.n == 333


def test_merge_equals_one_pass():
    x = _features(1, 200, 8)
    a, b = RunningStats(8).update(x[:77]), RunningStats(8).update(x[77:])
    a.merge(b).merge(RunningStats(8))
    np.testing.assert_allclose(a.sigma, np.cov(x, rowvar=False), rtol=1e-12)


def test_distance_matches_scipy_sqrtm_route():
    x, y = _features(2, 600, 64), _features(3, 500, 64, shift=0.3, scale=1.4)
    ours = distance(_stream(x).stats(), _stream(y).stats())
    # odd batches were streamed as float32: the reference sees exactly the values fed
    assert ours == pytest.approx(_reference_fid(_fed(x), _fed(y)), rel=1e-6)


def _fed(x: np.ndarray, sizes=(7, 1, 50, 13)) -> np.ndarray:
    """The values `_stream` accumulated (odd batches pass through float32)."""
    out, i, k = [], 0, 0
    while i < len(x):
        b = sizes[k % len(sizes)]
        out.append(x[i:i + b].astype(np.float32).astype(np.float64) if k % 2 else x[i:i + b])
        i, k = i + b, k + 1
    return np.concatenate(out)


def test_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-12)
    # commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    want = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(want, rel=1e-12)


def test_self_distance_is_zero():
    x = _features(4, 400, 128)
    s = RunningStats(128).update(x).stats()
    assert abs(distance(s, s)) < 1e-9 * np.trace(s.sigma)


def test_singular_covariances_exact():
    """Fewer samples than dimensions: rank-deficient covariances, no epsilon needed. Checked
    against the nuclear-norm identity tr √(Σ1Σ2) = ‖√Σ1 √Σ2‖_* (an SVD, another route)."""
    x, y = _features(5, 20, 48), _features(6, 30, 48, shift=0.5)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)

    def psd_sqrt(s):
        w, v = np.linalg.eigh(s)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    nuclear = np.linalg.svd(psd_sqrt(s1) @ psd_sqrt(s2), compute_uv=False).sum()
    d = x.mean(0) - y.mean(0)
    want = d @ d + np.trace(s1) + np.trace(s2) - 2 * nuclear
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no epsilon fallback on this path
        got = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert got == pytest.approx(want, rel=1e-8)


def test_epsilon_fallback_is_announced(monkeypatch):
    x, y = _features(7, 300, 16), _features(8, 300, 16, shift=1.0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    real = frechet.trace_sqrt_product
    calls = []

    def flaky(a, b):
        calls.append(1)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("did not converge")
        return real(a, b)

    monkeypatch.setattr(frechet, "trace_sqrt_product", flaky)
    with pytest.warns(RuntimeWarning, match="adding 1e-06"):
        got = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert got == pytest.approx(_reference_fid(x, y), rel=1e-4)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 2"):
        _ = RunningStats(3).update(np.ones((1, 3))).sigma
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        RunningStats(3).update(np.ones((4, 2)))


def test_stats_file_roundtrip(tmp_path):
    s = RunningStats(5).update(_features(9, 50, 5)).stats()
    path = tmp_path / "ref" / "stats"  # no .npz suffix: saved exactly where asked
    s.save(path)
    back = FeatureStats.load(path)
    assert back.n == 50 and np.array_equal(back.mu, s.mu) and np.array_equal(back.sigma, s.sigma)
    assert FeatureStats.load(s.to_bytes()).n == 50
    # pytorch-fid's precomputed statistics hold mu and sigma only
    np.savez(tmp_path / "pfid.npz", mu=s.mu, sigma=s.sigma)
    assert FeatureStats.load(tmp_path / "pfid.npz").n is None
    np.savez(tmp_path / "bad.npz", mean=s.mu)
    with pytest.raises(ValueError, match="lacks"):
        FeatureStats.load(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        FeatureStats.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("n", [12, 90])  # fewer samples than dimensions (the n×n route), and more
def test_distance_to_a_sample_equals_the_distance_to_its_statistics(n):
    from orchestrator.eval.frechet import distance_to_sample

    a = RunningStats(40).update(_features(5, 300, 40)).stats()
    x = _features(6, n, 40, shift=0.2, scale=0.8)
    x[1] = x[0]  # a bootstrap resample repeats rows
    assert distance_to_sample(a, x) == pytest.approx(distance(a, RunningStats(40).update(x).stats()), rel=1e-7)
