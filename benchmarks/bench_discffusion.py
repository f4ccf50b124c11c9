"""Discffusion scoring benchmarks, side by side in one process on the tiny SD.

1. Throughput (candidate-image pairs/s): the candidates of an image scored in one batch against
   one at a time (batch_size 1), the same scores to 1e-5 asserted. Ratio = batched / one-at-a-time.
2. Peak memory of scoring one caption against one image (batch 1) on the tiny base (--base, the
   shipped assets/demo-base; tiny-random when absent), measured first, before anything larger has
   raised the process's peak: on a CPU the growth of peak RSS over the loaded model's (coarse:
   allocator caching included), on CUDA torch's allocator peak. SD 2.1-base at 512 px in bf16 runs
   whenever a GPU and its weights are here (`--sd21 DIR`); the paper's 9.8 GB is the figure to beat.

    python benchmarks/bench_discffusion.py [--images 8] [--candidates 10] [--repeats 3] [--sd21 DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _timing import timed  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import shapes_data
from orchestrator.models.common.images import to_pil
from orchestrator.models.discffusion.options import DiscffusionOptions
from orchestrator.models.discffusion.score import DiffusionScorer
from orchestrator.models.sd import build_tiny, load_components


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", default="assets/demo-base", help="the tiny SD base (tiny-random when absent)")
    ap.add_argument("--sd21", default=None, help="an SD 2.1-base diffusers directory (GPU runs only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = shapes_data(args.images * args.candidates, seed=0, size=32, caption="spatial")
    images = to_pil(data.images[:args.images].float() / 255)
    captions = data.captions[:args.candidates]
    c = load_components(args.base) if os.path.isdir(args.base) else build_tiny(seed=0)
    base_name = args.base if os.path.isdir(args.base) else "tiny-random"
    one = DiffusionScorer(c, DiscffusionOptions(batch_size=1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        one.score_candidates(images[0], captions[:1])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    params = sum(p.numel() for m in (c.unet, c.vae, c.text_encoder) for p in m.parameters())
    print(f"peak memory scoring at batch 1 ({base_name}, {params / 1e6:.2f} M parameters, CPU, "
          f"{len(one.timesteps)} timesteps): +{grown / 1024:.1f} MiB peak RSS over the loaded model "
          f"(max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    if torch.cuda.is_available():
        c.to("cuda")
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            DiffusionScorer(c, DiscffusionOptions(batch_size=1)).score_candidates(images[0], captions[:1])
        print(f"  on CUDA: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB allocator peak")
        c.to("cpu")
    batched = DiffusionScorer(c, DiscffusionOptions(batch_size=args.candidates))
    single = DiffusionScorer(c, DiscffusionOptions(batch_size=1))

    def run(scorer):
        return [scorer.score_candidates(im, captions) for im in images]

    with torch.no_grad():
        a, b = run(batched), run(single)
        worst = max(float((x - y).abs().max()) for x, y in zip(a, b))
        assert worst <= 1e-5, f"batched and one-at-a-time scores differ by {worst}"
        t_b = statistics.median(timed(lambda: run(batched), 1) for _ in range(args.repeats))
        t_s = statistics.median(timed(lambda: run(single), 1) for _ in range(args.repeats))
    pairs = args.images * args.candidates
    print(f"scoring {pairs} pairs ({args.images} images x {args.candidates} candidates, "
          f"{len(batched.timesteps)} timesteps, {base_name}, {args.threads} thread(s)); max |diff| {worst:.1e}")
    print(f"  batched        {pairs / t_b:8.1f} pairs/s")
    print(f"  one at a time  {pairs / t_s:8.1f} pairs/s")
    print(f"  ratio batched/one-at-a-time = {t_s / t_b:.2f}x")

    if not torch.cuda.is_available() or not args.sd21:
        print("SD 2.1-base 512 px bf16 on a GPU: not run here (needs CUDA and --sd21 DIR)")
        return
    sd = load_components(args.sd21, dtype=torch.bfloat16).to("cuda")
    scorer = DiffusionScorer(sd, DiscffusionOptions(batch_size=1))
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        scorer.score_candidates(images[0].resize((512, 512)), captions[:1])
    print(f"SD 2.1-base 512 px bf16, batch 1: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB peak "
          f"(paper: 9.8 GB)")


if __name__ == "__main__":
    main()
