"""Trainer benchmarks, each side by side in one process on the same tiny SD and batch.

1. Step time: the project's Trainer against a minimal hand-written PyTorch + diffusers loop
   doing the same work (encode with the frozen VAE/text encoder, noise, U-Net, ε-MSE, clip,
   AdamW). Ratio = hand-loop time / trainer time; the target is >= 0.95.
2. Epoch time with the latent/text cache against without it (the cache's one-time encoding
   cost is reported separately).

Runs alternate between the contenders so machine-load drift hits both alike; medians reported.
    python benchmarks/bench_trainer.py [--steps 20] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

from _timing import side_by_side, step_arguments, timed  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd import build_tiny, tokenize
from orchestrator.storage import open_store
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer


def hand_loop(data, batch_size: int, lr: float, seed: int):
    """diffusers' train_text_to_image step, reduced to its essentials."""
    c = build_tiny(seed=0)
    c.vae.requires_grad_(False)
    c.text_encoder.requires_grad_(False)
    unet = c.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    pos = 0

    def step():
        nonlocal pos
        idx = perm[pos:pos + batch_size]
        pos = (pos + batch_size) % (len(data) - batch_size + 1)
        with torch.no_grad():
            dist = c.vae.encode(data.pixels(idx)).latent_dist
            latents = dist.sample(generator=g) * c.vae.config.scaling_factor
            text = c.text_encoder(tokenize(c.tokenizer, [data.captions[i] for i in idx.tolist()]))[0]
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (len(idx),), generator=g)
        pred = unet(c.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, n=256, argv=argv)
    data = shapes_data(args.n, seed=0, size=32, caption="spatial")
    spec = TrainSpec(steps=10**6, batch_size=args.batch_size, lr=1e-4, checkpoint_every=10**6, seed=0)
    store = open_store(tempfile.mkdtemp(prefix="bench-trainer-"))

    # --- 1. trainer vs hand-written loop, same work per step (no cache on either side)
    sd = get_variant("sd")
    trainer = Trainer(sd, build_tiny(seed=0), data, spec, store, "bench/step",
                      config=LoopConfig(use_cache=False, export_model=False))
    hand = hand_loop(data, args.batch_size, spec.lr, 0)
    t_ours, t_hand = side_by_side(trainer.train_step, hand, args.steps, args.repeats)
    print(f"step time (batch {args.batch_size}, 32 px, {args.threads} thread(s), "
          f"median of {args.repeats}x{args.steps}):")
    print(f"  trainer      {t_ours * 1e3:8.2f} ms/step")
    print(f"  hand loop    {t_hand * 1e3:8.2f} ms/step")
    print(f"  ratio hand/trainer = {t_hand / t_ours:.3f}  (target >= 0.95)")

    # --- 2. epoch with the latent/text cache vs without
    t0 = time.perf_counter()
    cached = Trainer(sd, build_tiny(seed=0), data, spec, store, "bench/cached",
                     config=LoopConfig(use_cache=True, export_model=False))
    encode_s = time.perf_counter() - t0
    uncached = Trainer(sd, build_tiny(seed=0), data, spec, store, "bench/uncached",
                       config=LoopConfig(use_cache=False, export_model=False))
    per_epoch = len(data) // args.batch_size
    timed(cached.train_step, 2), timed(uncached.train_step, 2)
    with_cache, without = [], []
    for _ in range(max(1, args.repeats // 2)):
        with_cache.append(timed(cached.train_step, per_epoch) * per_epoch)
        without.append(timed(uncached.train_step, per_epoch) * per_epoch)
    e_c, e_u = statistics.median(with_cache), statistics.median(without)
    print(f"epoch time ({len(data)} examples, {per_epoch} steps):")
    print(f"  with cache     {e_c:7.3f} s   (one-time encode + store put: {encode_s:.3f} s incl. model build)")
    print(f"  without cache  {e_u:7.3f} s")
    print(f"  speed-up {e_u / e_c:.2f}x, time saved {100 * (1 - e_c / e_u):.1f}%")


if __name__ == "__main__":
    main()
