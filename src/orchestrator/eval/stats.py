"""Intervals and paired tests shared by every suite: Wilson score intervals for rates, a normal
interval for means, the exact McNemar test for two models judged on the same prompts."""
from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; say so rather than leave rounding noise.
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def mean_ci(xs: Sequence[float], z: float = Z95) -> tuple[float, tuple[float, float]]:
    """Mean and its normal-approximation interval (z standard errors each side)."""
    if not xs:
        return 0.0, (0.0, 0.0)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, (mean, mean)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = z * sd / math.sqrt(len(xs))
    return mean, (mean - half, mean + half)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test for two models judged on the same prompts (and, here, the same noise):
    only the discordant prompts carry information. Returns the counts and a two-sided p-value."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    # Python ints: with numpy's int64 the 2 ** m below overflows past 62 discordant pairs (p = 1).
    only_a = int(sum(bool(x) and not bool(y) for x, y in zip(a, b)))
    only_b = int(sum(bool(y) and not bool(x) for x, y in zip(a, b)))
    m = only_a + only_b
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m if m else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}
