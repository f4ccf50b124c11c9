"""Where a tiny base loses its objects: decoder, denoiser or guidance.

    python examples/evidence/diagnose_base.py --blobs file://runs/blobs      # the demo's base

Scores object accuracy (VISOR's OA, the detector on held-out spatial prompts' scenes) of
1. the real scenes passed through the VAE (the decoder's ceiling);
2. the U-Net's one-step estimate of the clean image from a real latent noised to step t
   (how far the denoiser gets from each noise level);
3. full DDIM samples at several guidance scales (what the evaluator sees).
Sampling and noise as the Evaluator actor's spatial suite (DDIM, 25 steps, seed 1234); the
held-out prompts are the shapes dataset of --eval-seed (default 1000, which no trial trains on).
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from orchestrator.eval.suites import DEFAULT_EVAL_SEED, build_context  # noqa: E402
from orchestrator.models.common.images import to_pil  # noqa: E402
from orchestrator.models.sd import generate, load_components  # noqa: E402
from orchestrator.models.sd.sampling import encode_text  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402
from orchestrator.training import TINY_BASE_PREFIX  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blobs", required=True, help="blob store holding the model")
    p.add_argument("--model", default=TINY_BASE_PREFIX, help="diffusers prefix in the store")
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 300, 500, 700])
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 7.0])
    a = p.parse_args()
    torch.set_num_threads(1)
    c = load_components(a.model, store=open_store(a.blobs))
    ctx = build_context(None, model=c, samples=a.prompts, eval_seed=a.eval_seed, device="cpu")
    prompts = ctx.prompts()
    real = ctx.reference_images()[: len(prompts)].float() / 127.5 - 1

    def object_accuracy(images: torch.Tensor) -> float:
        from orchestrator.eval.spatial import score_spatial

        return score_spatial(to_pil((images / 2 + 0.5).clamp(0, 1)), prompts).object_accuracy

    out: dict = {"model": a.model, "prompts": len(prompts)}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = c.vae.encode(real).latent_dist.mean * c.latent_scale
        out["vae_reconstruction"] = object_accuracy(c.vae.decode(z / c.latent_scale).sample)
        text = encode_text(c, [q.text for q in prompts])
        abar = c.scheduler.alphas_cumprod
        out["one_step_x0"] = {}
        for t in a.timesteps:
            noise = torch.randn(z.shape, generator=g)
            steps = torch.full((len(prompts),), t)
            zt = c.scheduler.add_noise(z, noise, steps)
            eps = c.unet(zt, steps, encoder_hidden_states=text).sample
            x0 = (zt - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            out["one_step_x0"][t] = object_accuracy(c.vae.decode(x0 / c.latent_scale).sample)
    out["samples_by_guidance"] = {}
    for w in a.guidance:
        o = ctx.options
        images = generate(c, [q.text for q in prompts], sampler=o.sampler, steps=o.steps, guidance_scale=w,
                          generator=torch.Generator().manual_seed(o.seed), batch_size=64)
        out["samples_by_guidance"][w] = object_accuracy(images * 2 - 1)
    print(json.dumps(out, indent=1, default=lambda v: float(np.asarray(v))))


if __name__ == "__main__":
    main()
