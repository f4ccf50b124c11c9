"""Visual-CoT (VCDM) benchmarks, side by side in one process, on the tiny shapes-world chain.

1. The prior: embeddings/s sampled (EDM Heun, 18 steps, 35 network calls), at batch 256.
2. The chain's overhead: images/s of the whole chain (prior, then the U-Net given the sampled
   embeddings) against the U-Net alone with no embedding (the unconditional arm), same model,
   sampler (DDIM 25), batch and noise. Ratio = chain time / unconditional time; what the chain
   adds is the prior's sampling and the embedding projection, so the target is <= 1.05.

Runs alternate between the contenders so machine-load drift hits both alike; medians reported.
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_vcdm.py [--steps 2] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _timing import side_by_side, step_arguments, timed  # benchmarks/ is on sys.path when a script runs
from orchestrator.models.vcdm import variant as vcdm
from orchestrator.models.vcdm.sampling import sample_embeddings


def main() -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=64, n=256, argv=None)
    m = vcdm.build_tiny(0, 32, embed_dim=64)
    for module in m.modules().values():
        module.eval()
    with torch.no_grad():  # a projection with weights, as after training (zero would be a no-op)
        m.image.embed_proj.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))

    n_emb = args.n
    per_call = timed(lambda: sample_embeddings(m, n_emb, generator=torch.Generator().manual_seed(0)), args.repeats)
    print(f"prior: {n_emb / per_call:,.0f} embeddings/s ({per_call * 1000:.0f} ms per {n_emb}, Heun 18 steps)")

    b = args.batch_size
    prompts = [""] * b

    def chain():
        vcdm.generate(m, prompts, steps=25, batch_size=b, generator=torch.Generator().manual_seed(0))

    def uncond():
        vcdm.generate(m, prompts, steps=25, batch_size=b, conditioning="none",
                      generator=torch.Generator().manual_seed(0))

    t_chain, t_uncond = side_by_side(chain, uncond, args.steps, args.repeats, warmup=1)
    ratio = t_chain / t_uncond
    print(f"chain:         {b / t_chain:6.1f} images/s (prior + U-Net, DDIM 25, batch {b})")
    print(f"unconditional: {b / t_uncond:6.1f} images/s (U-Net alone)")
    print(f"overhead ratio chain/unconditional = {ratio:.3f} (target <= 1.05) -> {'OK' if ratio <= 1.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
