"""What the benchmarks share: the mean wall time of a step (CUDA work waited for), two contenders
timed alternately, the step benchmarks' flags, a percentile."""
from __future__ import annotations

import time


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of `xs` by nearest rank (nan when empty)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def timed(fn, steps: int, device=None) -> float:
    """Seconds per call of `fn`, over `steps` calls."""
    cuda = device is not None and getattr(device, "type", device) == "cuda"
    if cuda:
        import torch
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if cuda:
        import torch
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def side_by_side(a, b, steps: int, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median seconds per call of `a` and of `b`, timed in alternation (`repeats` rounds of
    `steps` calls each, after `warmup` calls of both) so machine-load drift hits both alike."""
    import statistics

    timed(a, warmup), timed(b, warmup)
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, steps))
        tb.append(timed(b, steps))
    return statistics.median(ta), statistics.median(tb)


def step_arguments(description: str, *, batch_size: int, n: int, argv: list[str] | None = None):
    """The step benchmarks' common flags (steps, repeats, batch size, examples, threads), parsed,
    with torch's thread count set from them."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
