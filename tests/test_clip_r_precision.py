"""CLIP-R-Precision's protocol on synthetic score matrices, against brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orchestrator.eval.clip_r_precision import best_of_k, chunk_stats, clip_r_precision, r_precision, sample_negatives


def _brute_force_hits(scores: np.ndarray, own, negs) -> list[bool]:
    """Rank each image's 100 candidates one by one; ties are broken *against* the own caption,
    so a hit means its score is strictly the highest."""
    hits = []
    for i, k in enumerate(own):
        cands = [(scores[i, k], 0, "own")] + [(scores[i, j], 1, "neg") for j in negs[i]]
        ranked = sorted(cands, key=lambda c: (-c[0], -c[1]))
        hits.append(ranked[0][2] == "own")
    return hits


def test_known_by_construction():
    n = 200
    texts = [f"caption {i}" for i in range(n)]
    winners = {i for i in range(n) if i % 3 == 0 or i > 180}
    scores = np.zeros((n, n))
    for i in range(n):
        scores[i, i] = 1.0 if i in winners else -1.0
    res = r_precision(scores, range(n), texts, seed=5)
    assert res.hits == len(winners) and res.n == n and res.candidates == 100
    # chunks of 20 images each, after the seeded shuffle of the reference
    order = np.random.default_rng((5, 1)).permutation(n)
    want_chunks = [sum(int(i) in winners for i in order[c * 20:c * 20 + 20]) / 20 for c in range(10)]
    assert res.chunk_values == pytest.approx(want_chunks)
    assert res.value == pytest.approx(np.mean(want_chunks))
    assert res.std == pytest.approx(math.sqrt(np.mean((np.array(want_chunks) - np.mean(want_chunks)) ** 2)))
    assert res.ci[0] < len(winners) / n < res.ci[1]


def test_ties_are_misses():
    n = 120
    res = r_precision(np.ones((n, n)), range(n), [str(i) for i in range(n)])
    assert res.hits == 0 and res.value == 0.0


def test_against_brute_force_ranking():
    rng = np.random.default_rng(0)
    n, pool = 150, 400
    texts = [f"t{i % 350}" for i in range(pool)]  # some texts repeat
    own = rng.choice(pool, n, replace=False)
    scores = rng.normal(size=(n, pool))
    scores[np.arange(n), own] += rng.uniform(0, 4, n)  # own captions score higher, by varying margins
    scores[5, :] = scores[5, own[5]]  # a fully tied row
    res = r_precision(scores, own, texts, seed=11)
    negs = sample_negatives(own, texts, seed=11)
    want = _brute_force_hits(scores, own, negs)
    assert list(res.outcomes) == want and not want[5]
    assert 0 < res.hits < n


def test_negative_sampling_rules():
    texts = ["same"] * 5 + [f"other {i}" for i in range(200)] + ["same"]
    own = [0, 3, 100, 205]
    a = sample_negatives(own, texts, seed=1)
    assert a.shape == (4, 99)
    for i, k in enumerate(own):
        assert len(set(a[i])) == 99  # without replacement
        assert all(texts[j] != texts[k] for j in a[i])  # never the own text, even from another image
    assert np.array_equal(a, sample_negatives(own, texts, seed=1))  # seeded
    assert not np.array_equal(a, sample_negatives(own, texts, seed=2))
    with pytest.raises(ValueError, match="needs 99 negatives"):
        sample_negatives([0], ["a"] * 50 + [f"b{i}" for i in range(50)])


def test_chunks_follow_the_reference_shuffle_and_floor_size():
    """Park et al.'s code: shuffle the outcomes, cut chunks of floor(N/10), mean and population std.
    The issue's example: 400 hits then 600 misses. Contiguous chunks gave std 0.490 (four chunks
    all hits, six all misses); shuffled, each chunk holds ~40% hits."""
    ordered = np.array([1] * 400 + [0] * 600)
    mean, std, values = chunk_stats(ordered, 10, seed=0)
    assert len(values) == 10 and mean == pytest.approx(0.4)  # 10 chunks of 100: every image counted
    assert std == pytest.approx(np.std(values)) and 0.01 < std < 0.12
    assert chunk_stats(ordered, 10, seed=0) == (mean, std, values)  # seeded
    assert chunk_stats(ordered, 10, seed=1)[2] != values
    assert std < 0.2 < float(np.std([ordered[i * 100:(i + 1) * 100].mean() for i in range(10)]))
    # 13 images in 4 chunks: chunks of 3, the 13th image in none
    outcomes = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0])
    order = np.random.default_rng((7, 1)).permutation(13)
    mean, std, values = chunk_stats(outcomes, 4, seed=7)
    assert values == pytest.approx(tuple(outcomes[order[i * 3:(i + 1) * 3]].mean() for i in range(4)))
    with pytest.raises(ValueError, match="chunks"):
        chunk_stats(outcomes[:5], 10)


def test_random_scores_give_chance():
    rng = np.random.default_rng(3)
    n = 3000
    res = r_precision(rng.normal(size=(n, n)), range(n), [str(i) for i in range(n)], seed=0)
    assert abs(res.hits / n - 0.01) < 4 * math.sqrt(0.01 * 0.99 / n)


class _FakeEncoder:
    """Captions and images embedded on known directions."""

    def __init__(self, text_vecs: dict[str, np.ndarray]):
        self.text_vecs = text_vecs

    def encode_texts(self, texts):
        return torch.tensor(np.stack([self.text_vecs[t] for t in texts]))

    def encode_images(self, images):
        return torch.as_tensor(images, dtype=torch.float64).flatten(1)

    def score_pairs(self, captions, images):
        return (self.encode_texts(captions) * self.encode_images(images)).sum(-1).numpy()


def test_clip_route_and_best_of_k():
    n, d = 120, 130
    eye = np.eye(d)
    enc = _FakeEncoder({f"p{i}": eye[i] for i in range(d)})
    prompts = [f"p{i}" for i in range(n)]
    images = torch.tensor(eye[:n] * 0.5)
    images[::4] = torch.tensor(eye[n + 1])  # every 4th image matches a caption not its own
    res = clip_r_precision(enc, images, prompts, pool_texts=[f"p{i}" for i in range(d)], seed=0)
    assert res.hits == n - len(range(0, n, 4))
    # best of 3: round 1 holds the right image for every prompt
    rounds = torch.stack([torch.zeros(n, d, dtype=torch.float64), torch.tensor(eye[:n]), torch.tensor(eye[:n] * 0.3)])
    chosen, pick = best_of_k(enc, prompts, rounds)
    assert (pick == 1).all() and torch.equal(chosen, torch.tensor(eye[:n]))
