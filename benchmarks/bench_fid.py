"""FID benchmarks, each side by side in one process.

1. Fréchet distance of 2048-d statistics: the project's route (Cholesky factor + one symmetric
   eigenvalue solve, eval/frechet.py) against the textbook scipy.linalg.sqrtm route (pytorch-fid's:
   sqrtm of Σ1Σ2, real part, trace): wall time of each and the absolute difference of the values.
2. FID Inception-v3 feature extraction on the CPU at batch 32 (32x32 inputs, TF1 resize to 299
   included), in images/s. With RANDOM weights: the real file is not available here, and speed
   does not depend on the weights' values.

    python benchmarks/bench_fid.py [--threads 1] [--dim 2048] [--n 4096] [--batches 3]

--threads sets torch's and OpenBLAS's thread counts (the latter must be set before numpy loads,
which is why this script sets it from its own arguments first).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension (2048: Inception pool)")
    p.add_argument("--n", type=int, default=4096, help="samples per feature set (n > dim: full-rank covariances)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=3, help="timed Inception batches (after one warm-up)")
    p.add_argument("--skip-inception", action="store_true")
    return p.parse_args()


def bench_frechet(dim: int, n: int) -> None:
    import numpy as np
    import scipy.linalg

    from orchestrator.eval.frechet import RunningStats, frechet_distance

    rng = np.random.default_rng(0)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)  # correlated features, like real ones
    a = RunningStats(dim).update(np.abs(rng.standard_normal((n, dim)) @ mix)).stats()
    b = RunningStats(dim).update(np.abs(rng.standard_normal((n, dim)) @ mix * 1.05 + 0.02)).stats()

    t0 = time.perf_counter()
    ours = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():  # pytorch-fid's fallback, for the record
        offset = np.eye(dim) * 1e-6
        covmean = scipy.linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    diff = a.mu - b.mu
    ref = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean.real))
    t_ref = time.perf_counter() - t0

    print(f"Fréchet distance, d={dim}, covariances from n={n} samples each (float64)")
    print(f"  {'route':<34}{'time (s)':>10}{'value':>22}")
    print(f"  {'project: Cholesky + eigvalsh':<34}{t_ours:>10.2f}{ours:>22.12f}")
    print(f"  {'scipy.linalg.sqrtm (pytorch-fid)':<34}{t_ref:>10.2f}{ref:>22.12f}")
    print(f"  speed-up {t_ref / t_ours:.1f}x; |difference| = {abs(ours - ref):.3e} "
          f"(relative {abs(ours - ref) / abs(ref):.3e}); imaginary part left by sqrtm: "
          f"{np.abs(np.diagonal(covmean).imag).max():.3e}")


def bench_inception(batch: int, batches: int) -> None:
    import torch

    from orchestrator.eval.inception import FIDInceptionV3

    model = FIDInceptionV3(seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, 32, 32, generator=g)
    with torch.inference_mode():
        model(images)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            model(images)
        wall = time.perf_counter() - t0
    print(f"FID Inception-v3 features on CPU, batch {batch}, 32x32 -> TF1 resize to 299 -> 2048-d pool, "
          f"{torch.get_num_threads()} thread(s), RANDOM weights (speed only; no pt_inception file here)")
    print(f"  {batch * batches / wall:.2f} images/s ({wall / batches:.2f} s per batch of {batch}, {batches} batches)")


def main() -> int:
    args = _args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their BLAS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads} (BLAS and torch); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    bench_frechet(args.dim, args.n)
    if not args.skip_inception:
        bench_inception(args.batch, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
