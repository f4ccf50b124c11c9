"""What the benchmarks share: the mean wall time of a step (CUDA work waited for)."""
from __future__ import annotations

import time


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
