"""Paired bootstrap of FID/KID differences, checked against the project's direct Fréchet and MMD² code."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from orchestrator.eval import paired_bootstrap as pb
from orchestrator.eval.frechet import FeatureStats, RunningStats, distance, frechet_distance
from orchestrator.eval.kid import mmd2_unbiased, polynomial_kernel
from orchestrator.eval.paired_bootstrap import BootstrapDifference, paired_fid_bootstrap, paired_kid_bootstrap


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)  # correlated features, as real ones are
    return rng.standard_normal((n, d)) @ mix + shift


def _stats(x: np.ndarray) -> FeatureStats:
    """As fid.stats_of builds them: streaming float64 mean and n − 1 covariance."""
    return RunningStats(x.shape[1]).update(x).stats()


def _draw(n: int, resamples: int, seed: int) -> np.ndarray:
    """The documented index draw."""
    return np.random.default_rng((seed, 2)).integers(0, n, size=(resamples, n))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(idx, minlength=n).astype(np.float64)


# n < d, n > d, and a singular reference (fewer reference samples than dimensions).
SHAPES = [(60, 64, 200), (120, 16, 300), (80, 64, 40)]


@pytest.mark.parametrize("n, d, n_ref", SHAPES)
def test_full_sample_fid_matches_project_distance(n, d, n_ref):
    a, b = _features(1, n, d), _features(2, n, d, shift=0.3)
    ref = _stats(_features(3, n_ref, d))
    r = paired_fid_bootstrap(a, b, ref, resamples=5)
    want_a, want_b = distance(_stats(a), ref), distance(_stats(b), ref)
    assert r.a == pytest.approx(want_a, rel=1e-8) and r.b == pytest.approx(want_b, rel=1e-8)
    # The difference is only as exact as the values: with a singular reference, √ of rounding-sized
    # eigenvalues moves either FID by ~1e-9 of itself, the project's own two routes included.
    assert r.difference == pytest.approx(want_b - want_a, rel=1e-8, abs=1e-8 * max(want_a, want_b))
    # Far from the origin: the centring keeps the Gram route exact.
    far = a + 1e3
    r_far = paired_fid_bootstrap(far, far, _stats(_features(3, n_ref, d) + 1e3), resamples=2)
    assert r_far.a == pytest.approx(distance(_stats(far), _stats(_features(3, n_ref, d) + 1e3)), rel=1e-8)


@pytest.mark.parametrize("n, d, n_ref", SHAPES)
def test_resampled_fid_matches_direct_computation(n, d, n_ref):
    f = _features(4, n, d, shift=-0.5)
    ref = _stats(_features(5, n_ref, d))
    resampled = pb._ResampledFID(f, ref)
    for seed in range(3):
        idx = _draw(n, 1, seed)[0]
        x = f[idx]
        want = frechet_distance(x.mean(0), np.cov(x, rowvar=False), ref.mu, ref.sigma)
        assert resampled(_counts(idx, n)) == pytest.approx(want, rel=1e-8)
    # The shapes cover both routes: the k×k Gram eigenproblem (k distinct indices <= d) and the d×d one.
    k = np.count_nonzero(_counts(_draw(n, 1, 0)[0], n))
    assert (k <= d) == (d == 64)


def test_one_resample_is_the_same_draw_for_both_models():
    n, d = 70, 24
    a, b = _features(6, n, d), _features(7, n, d, shift=0.2)
    ref = _stats(_features(8, 150, d))
    r = paired_fid_bootstrap(a, b, ref, resamples=2, seed=11)
    d_star = np.array([distance(_stats(b[idx]), ref) - distance(_stats(a[idx]), ref) for idx in _draw(n, 2, 11)])
    # the interval is the spread of the resampled differences, recentred on the full-sample one
    want = np.percentile(d_star - d_star.mean() + r.difference, [2.5, 97.5])
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(want), rel=1e-8, abs=1e-10)


def test_identical_models_give_no_difference():
    a = _features(9, 60, 32)
    ref = _stats(_features(10, 100, 32))
    r = paired_fid_bootstrap(a, a.copy(), ref, resamples=200)
    assert r.difference == 0.0 and r.a == r.b
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert r.p_value == 1.0


def test_shifted_model_is_significantly_worse():
    a = _features(11, 90, 24)
    ref = _stats(_features(12, 200, 24))
    r = paired_fid_bootstrap(a, a + 2.0, ref, resamples=300, seed=1)
    assert r.difference > 0 and r.ci_low > 0 and r.ci_high >= r.ci_low
    assert r.p_value == pytest.approx(2 / 301) and r.p_value < 0.01
    # The other way round: B better than A, a negative interval, the same minimal p.
    r_rev = paired_fid_bootstrap(a + 2.0, a, ref, resamples=300, seed=1)
    assert r_rev.difference < 0 and r_rev.ci_high < 0 and r_rev.p_value == pytest.approx(2 / 301)


def test_close_models_are_not_significant():
    # B is A plus a little independent noise: a real but tiny change whose interval covers 0.
    a = _features(13, 100, 16)
    b = a + 0.01 * np.random.default_rng(14).standard_normal(a.shape)
    r = paired_fid_bootstrap(a, b, _stats(_features(15, 200, 16)), resamples=300)
    assert r.ci_low < 0 < r.ci_high and r.p_value > 0.05


def test_seed_decides_the_draws():
    a, b = _features(16, 60, 16), _features(17, 60, 16, shift=0.1)
    ref = _stats(_features(18, 100, 16))
    r1 = paired_fid_bootstrap(a, b, ref, resamples=100, seed=3)
    assert paired_fid_bootstrap(a, b, ref, resamples=100, seed=3) == r1
    r2 = paired_fid_bootstrap(a, b, ref, resamples=100, seed=4)
    assert (r2.a, r2.b) == (r1.a, r1.b)
    assert (r2.ci_low, r2.ci_high) != (r1.ci_low, r1.ci_high)
    assert (r1.resamples, r1.seed, r2.seed) == (100, 3, 4)
    assert r1.test == "paired bootstrap over sample indices (100, recentred), two-sided"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r1.p_value = 0.5  # type: ignore[misc]
    assert isinstance(r1, BootstrapDifference)


@pytest.mark.parametrize("which", ["fid", "kid"])
@pytest.mark.parametrize("a_shape, b_shape, ref_d, resamples, match", [
    ((20, 8), (21, 8), 8, 10, "one shape"),
    ((20, 8), (20, 9), 8, 10, "one shape"),
    ((1, 8), (1, 8), 8, 10, "at least 2 samples"),
    ((20,), (20,), 8, 10, "2-d"),
    ((20, 8), (20, 8), 9, 10, "dimension|n_ref, 8"),
    ((20, 8), (20, 8), 8, 0, "resamples"),
])
def test_bad_inputs_are_refused(which, a_shape, b_shape, ref_d, resamples, match):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    ref_x = rng.standard_normal((30, ref_d))
    with pytest.raises(ValueError, match=match):
        if which == "fid":
            paired_fid_bootstrap(a, b, _stats(ref_x), resamples=resamples)
        else:
            paired_kid_bootstrap(a, b, ref_x, resamples=resamples)


def test_kid_refuses_a_one_sample_reference():
    a = _features(19, 20, 8)
    with pytest.raises(ValueError, match="reference needs at least 2"):
        paired_kid_bootstrap(a, a, a[:1], resamples=5)


def test_kid_full_and_resampled_values_match_mmd2_unbiased():
    n, d = 80, 32
    a, b, ref = _features(20, n, d), _features(21, n, d, shift=0.2), _features(22, n, d, shift=0.1)
    r = paired_kid_bootstrap(a, b, ref, resamples=2, seed=5)
    assert abs(r.a - mmd2_unbiased(a, ref)) < 1e-10 and abs(r.b - mmd2_unbiased(b, ref)) < 1e-10
    # A resample's value is mmd2_unbiased on the resampled rows: positions i ≠ j, duplicates included.
    d_star = np.array([mmd2_unbiased(b[idx], ref) - mmd2_unbiased(a[idx], ref) for idx in _draw(n, 2, 5)])
    want = np.percentile(d_star - d_star.mean() + r.difference, [2.5, 97.5])
    assert np.allclose((r.ci_low, r.ci_high), want, rtol=0, atol=1e-10)


def test_kid_reference_of_another_size_in_blocks(monkeypatch):
    monkeypatch.setattr(pb, "_KERNEL_CHUNK", 7)  # several blocks, the last one partial
    n, nr, d = 30, 45, 12
    x, y = _features(23, n, d), _features(24, nr, d, shift=0.3)
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    want = ((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1)) + (k_yy.sum() - np.trace(k_yy)) / (nr * (nr - 1))
            - 2 * polynomial_kernel(x, y).mean())
    assert abs(paired_kid_bootstrap(x, x, y, resamples=3).a - want) < 1e-10


def test_kid_identical_and_separated_models():
    a, ref = _features(25, 80, 16), _features(26, 80, 16)
    same = paired_kid_bootstrap(a, a.copy(), ref, resamples=200)
    assert same.difference == 0.0 and same.p_value == 1.0 and (same.ci_low, same.ci_high) == (0.0, 0.0)
    far = paired_kid_bootstrap(a, a + 1.5, ref, resamples=200, seed=2)
    assert far.difference > 0 and far.ci_low > 0 and far.p_value < 0.01
    assert paired_kid_bootstrap(a, a + 1.5, ref, resamples=200, seed=2) == far


def test_the_interval_is_recentred_where_resampling_shifts_the_difference():
    """A resample repeats samples, which raises FID, and by more for the more spread-out model: the
    resampled differences sit off-centre, here wholly above d (neither their percentile interval
    nor the reflected, basic one covers it); recentred on d, the interval keeps their width."""
    n, d = 100, 64
    rng = np.random.default_rng(40)
    a = rng.standard_normal((n, d))
    b = 1.6 * rng.standard_normal((n, d))  # wider: its FID rises more when resampled
    ref = _stats(rng.standard_normal((400, d)))
    r = paired_fid_bootstrap(a, b, ref, resamples=300, seed=0)
    d_star = np.array([distance(_stats(b[idx]), ref) - distance(_stats(a[idx]), ref) for idx in _draw(n, 300, 0)])
    lo, hi = np.percentile(d_star, [2.5, 97.5])
    assert r.difference < lo and not (2 * r.difference - hi <= r.difference <= 2 * r.difference - lo)
    assert r.ci_low < r.difference < r.ci_high and r.ci_high - r.ci_low == pytest.approx(hi - lo)


def test_sign_flip_permutation_on_continuous_scores():
    from orchestrator.eval.paired_bootstrap import paired_permutation

    rng = np.random.default_rng(41)
    a = rng.normal(25.0, 3.0, 200)
    same = paired_permutation(a, a.copy(), resamples=500)
    assert same.difference == 0.0 and same.p_value == 1.0
    # a small paired gain, far below the scores' spread: visible to the paired test only
    gain = paired_permutation(a, a + 0.3 + rng.normal(0, 0.2, 200), resamples=2000, seed=1)
    assert gain.p_value == pytest.approx(1 / 2001) and 0 < gain.ci_low < gain.difference < gain.ci_high
    assert gain.a == pytest.approx(a.mean()) and gain.test == "paired sign-flip permutation (2000), two-sided"
    # no shift, only noise: not significant, the interval covers 0; the same seed, the same answer
    null = paired_permutation(a, a + rng.normal(0, 1.0, 200), resamples=2000, seed=2)
    assert null.p_value > 0.05 and null.ci_low < 0 < null.ci_high
    assert paired_permutation(a, a + rng.normal(0, 1.0, 200)[::-1], resamples=100, seed=2) != null
    # exact on a tiny case: differences (1, 1, 1): of the 8 sign vectors only 2 reach |mean| 1
    tiny = paired_permutation([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], resamples=20000, seed=3)
    assert tiny.p_value == pytest.approx(2 / 8, abs=0.01)
    with pytest.raises(ValueError, match="one length"):
        paired_permutation([1.0, 2.0], [1.0, 2.0, 3.0])
