"""Pretraining (denoiser stage of `orch pretrain`) steps per second, before and after, side by side.

before: the denoiser step as pretrain.train_denoiser did it until the latent cache (commit
        3e5ebc7): the frozen VAE encodes the batch's pixels every step, then noise, U-Net + text
        encoder, ε-MSE, clip, AdamW.
after:  pretrain.DenoiserStep: the latent distribution of the pretraining set encoded once
        (its one-time cost is reported separately), each step draws a latent sample from it;
        otherwise the same work (same tiny SD, same batch, same optimiser), plus the EMA update
        of the shipped base's recipe.

Runs alternate between the two so machine-load drift hits both alike; medians reported.
    python benchmarks/bench_pretrain.py [--steps 20] [--repeats 5] [--batch-size 32] [--threads 1]
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _timing import side_by_side, step_arguments  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import shapes_data
from orchestrator.models.common.diffusion import diffusion_loss
from orchestrator.models.sd import build_tiny, tokenize
from orchestrator.training.pretrain import DenoiserStep


def before_step(data, batch_size: int, lr: float, seed: int):
    """train_denoiser's step before the cache (pixels -> VAE encode every step)."""
    from orchestrator.training.state import BatchOrder, DataCursor

    c = build_tiny(seed, 32, data.captions)
    c.vae.requires_grad_(False)
    unet, te = c.unet.train(), c.text_encoder.train().requires_grad_(True)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    order, cursor = BatchOrder(len(data), batch_size, seed), DataCursor()
    g = torch.Generator().manual_seed(seed + 1)
    ids_all = tokenize(c.tokenizer, data.captions)
    empty = tokenize(c.tokenizer, [""])

    def step():
        idx = order.next(cursor)
        with torch.no_grad():
            dist = c.vae.encode(data.pixels(idx)).latent_dist
            latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)) * c.latent_scale
        ids = ids_all[idx].clone()
        ids[torch.rand(len(idx), generator=g) < 0.1] = empty
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, c.scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        pred = unet(c.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=te(ids)[0]).sample
        loss = diffusion_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=32, n=2000, argv=argv)
    data = shapes_data(args.n, seed=0, size=32, caption="generic")

    before = before_step(data, args.batch_size, 5e-4, 0)
    t0 = time.perf_counter()
    after = DenoiserStep(build_tiny(0, 32, data.captions), data, args.batch_size, 5e-4, 0, ema_decay=0.999)
    encode_s = time.perf_counter() - t0
    b, a = side_by_side(before, after, args.steps, args.repeats)
    print(f"pretraining denoiser step (batch {args.batch_size}, 32 px, {args.threads} thread(s), "
          f"median of {args.repeats}x{args.steps}):")
    print(f"  before (VAE encode per step)  {b * 1e3:8.2f} ms/step  {1 / b:6.2f} steps/s")
    print(f"  after  (latents cached)       {a * 1e3:8.2f} ms/step  {1 / a:6.2f} steps/s")
    print(f"  speed-up {b / a:.2f}x   (one-time encode of {args.n} examples + model build: {encode_s:.2f} s)")


if __name__ == "__main__":
    main()
