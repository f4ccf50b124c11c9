"""GLIDE-mini benchmarks, side by side in one process.

1. Step time: the project's Trainer on the tiny GLIDE-mini against a minimal hand-written loop on
   the same model and batch (text forward, noise, U-Net, ε-MSE + the VLB term, clip, AdamW).
   Ratio = hand-loop time / trainer time; the target is >= 0.95.
2. Sampling: images/s of the tiny model with classifier-free guidance (scale 3, DDIM 25 steps;
   each step runs the conditional and the unconditional pass as one batch).
3. The full (released) config: parameter count on the meta device, always; a bf16 forward pass
   at batch 1 timed on a GPU whenever one is available (skipped, and said, otherwise).

Runs alternate between the contenders so machine-load drift hits both alike; medians reported.
    python benchmarks/bench_glide.py [--steps 10] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _timing import side_by_side, step_arguments, timed  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.glide_mini import variant as glide
from orchestrator.models.glide_mini.config import FULL
from orchestrator.models.glide_mini.diffusion import vlb_bits
from orchestrator.models.glide_mini.model import build
from orchestrator.models.glide_mini.options import GlideMiniOptions
from orchestrator.models.glide_mini.tokenizer import shapes_words
from orchestrator.models.registry import get_variant
from orchestrator.storage import open_store
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer


def hand_loop(data, batch_size: int, lr: float, seed: int):
    """The same finetuning step written directly against the model (U-Net trained, text frozen)."""
    m = glide.build_tiny(0, 32)
    m.text.requires_grad_(False).eval()
    unet = m.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    tokens, mask = m.tokens(data.captions)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    pos = 0

    def step():
        nonlocal pos
        idx = perm[pos:pos + batch_size]
        pos = (pos + batch_size) % (len(data) - batch_size + 1)
        x0 = data.pixels(idx)
        with torch.no_grad():
            proj, seq = m.text(tokens[idx], mask[idx])
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (len(idx),), generator=g)
        xt = m.schedule.q_sample(x0, t, noise)
        out = unet(xt, t, proj, seq)
        loss = ((out[:, :3] - noise) ** 2).mean(dim=(1, 2, 3)) + vlb_bits(m.schedule, out, x0, xt, t)
        loss = loss.mean()
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
    store = open_store(tempfile.mkdtemp(prefix="bench-glide-"))

    # --- 1. trainer vs hand-written loop, same work per step (no caption dropout on either side)
    trainer = Trainer(get_variant("glide_mini"), glide.build_tiny(0, 32), data, spec, store, "bench/step",
                      options=GlideMiniOptions(caption_dropout=0.0), config=LoopConfig(export_model=False))
    hand = hand_loop(data, args.batch_size, spec.lr, 0)
    t_ours, t_hand = side_by_side(trainer.train_step, hand, args.steps, args.repeats, warmup=2)
    print(f"GLIDE-mini tiny step time (batch {args.batch_size}, 32 px, {args.threads} thread(s), "
          f"median of {args.repeats}x{args.steps}):")
    print(f"  trainer      {t_ours * 1e3:8.1f} ms/step")
    print(f"  hand loop    {t_hand * 1e3:8.1f} ms/step")
    print(f"  ratio hand/trainer = {t_hand / t_ours:.3f}  (target >= 0.95)")

    # --- 2. sampling with CFG
    m = glide.build_tiny(0, 32)
    prompts = [data.captions[i] for i in range(16)]
    g = torch.Generator().manual_seed(0)
    run = lambda: glide.generate(m, prompts, sampler="ddim", steps=25, guidance_scale=3.0, generator=g)  # noqa: E731
    run()
    per = statistics.median(timed(run, 1) for _ in range(args.repeats))
    print(f"sampling (tiny, 16 prompts, DDIM 25 steps, CFG 3): {len(prompts) / per:.1f} images/s "
          f"({per:.2f} s per batch)")

    # --- 3. the released config
    full = build(FULL, shapes_words(), device="meta")
    n = sum(t.numel() for t in full.state_dict().values())
    print(f"full config: {n:,} parameters ({len(full.state_dict())} keys; released base: 385,030,726, 783)")
    if not torch.cuda.is_available():
        print("full config forward (bf16, batch 1): no GPU here, not timed")
        return
    dev = torch.device("cuda")
    full = build(FULL, shapes_words(), device=dev)
    for part in full.modules().values():
        part.to(torch.bfloat16).eval()
    x = torch.randn(1, 3, 64, 64, device=dev, dtype=torch.bfloat16)
    t = torch.tensor([500], device=dev)
    tokens, mask = (v.to(dev) for v in full.tokens(["a red circle to the left of a blue square"]))
    with torch.no_grad():
        fwd = lambda: full.denoise(x, t, tokens, mask)  # noqa: E731
        timed(fwd, 3, dev)
        per = statistics.median(timed(fwd, 10, dev) for _ in range(args.repeats))
    print(f"full config forward (bf16, batch 1, {torch.cuda.get_device_name()}): {per * 1e3:.2f} ms "
          f"({torch.cuda.max_memory_allocated() / 2**30:.2f} GiB peak)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
