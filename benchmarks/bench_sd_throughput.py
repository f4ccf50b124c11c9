"""SD 2 U-Net training throughput: the project's trainer against a bare diffusers loop, same model.

The U-Net is Stable Diffusion 2's at its published config (stabilityai/stable-diffusion-2-1-base:
320/640/1280/1280 channels, 2 layers per block, head dims 5/10/20/20, linear projections, 1024-d
cross-attention; ~866 M parameters), with random weights. Latents and text embeddings are cached
(the trainer's latent cache), so the step is the U-Net's forward, backward and AdamW update; a
tiny VAE (8x downsampling, 4 latent channels) and a one-layer 1024-d text encoder stand in for
the frozen encoders, which the cache takes out of the step anyway.

Both contenders share the U-Net and one AdamW (so memory holds one copy), and alternate so load
drift hits both alike; medians reported. Ratio = bare-loop time / trainer time (target >= 0.95).
    CPU (default here): 64 px (8x8 latents), batch 1, fp32 — about 14 GB of memory.
    GPU: 512 px, bf16, batch 8: also prints images/s per GPU.
    python benchmarks/bench_sd_throughput.py [--resolution R] [--batch B] [--precision bf16] [--steps N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

from _timing import timed  # benchmarks/ is on sys.path when a script runs

# SD 2.1-base's U-Net (unet/config.json of the public release), as facts.
SD2_UNET = dict(
    in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    use_linear_projection=True, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
    upcast_attention=False,
)


def components(resolution: int):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from orchestrator.models.common.shapes_tokenizer import build_tokenizer
    from orchestrator.models.sd.pipeline import SDComponents
    from orchestrator.models.sd.tiny_config import SCHEDULER_CONFIG

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=resolution // 8, **SD2_UNET)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, sample_size=resolution)
    tok = build_tokenizer(["a red circle to the left of a blue square"])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=1024, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=8, max_position_embeddings=77,
                                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id))
    sched = DDPMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": "epsilon"})
    return SDComponents(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched)


def bare_step(trainer, batch: int, precision: str, gen: torch.Generator):
    """diffusers' train_text_to_image step on cached latents, reduced to its essentials, on the
    trainer's own U-Net, data cache and optimiser."""
    obj, device = trainer.objective, trainer.device
    enc, unet, sched = obj.encoded, obj.c.unet, obj.c.scheduler
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def step():
        idx = torch.randint(0, enc.latent_mean.shape[0], (batch,), generator=gen).to(device)
        mean, std = enc.latent_mean[idx], enc.latent_std[idx]
        latents = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * obj.c.latent_scale
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=enc.text_for(idx)).sample
        loss = F.mse_loss(pred.float(), noise.float())
        trainer.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.params, 1.0)
        trainer.opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> None:
    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import TrainSpec
    from orchestrator.models.registry import get_variant
    from orchestrator.storage import open_store
    from orchestrator.training.control import LoopConfig
    from orchestrator.training.loop import Trainer

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=512 if cuda else 64)
    ap.add_argument("--batch", type=int, default=8 if cuda else 1)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16" if cuda else "fp32")
    ap.add_argument("--steps", type=int, default=10 if cuda else 2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if cuda else "cpu")

    n = max(4 * args.batch, 8)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, args.resolution, args.resolution), dtype=torch.uint8, generator=g)
    data = ImageTextData(images, [f"a red circle to the left of a blue square {i % 2}" for i in range(n)])
    spec = TrainSpec(steps=10**6, batch_size=args.batch, lr=1e-5, precision=args.precision,
                     checkpoint_every=10**6, seed=0)
    c = components(args.resolution)
    params = sum(p.numel() for p in c.unet.parameters())
    store = open_store(tempfile.mkdtemp(prefix="bench-sd2-"))
    trainer = Trainer(get_variant("sd"), c, data, spec, store, "bench/sd2",
                      config=LoopConfig(device=device, use_cache=True, export_model=False))
    bare = bare_step(trainer, args.batch, args.precision, torch.Generator().manual_seed(1))
    timed(trainer.train_step, 1, device), timed(bare, 1, device)  # warm-up (allocations, kernels)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(timed(trainer.train_step, args.steps, device))
        theirs.append(timed(bare, args.steps, device))
    t_ours, t_bare = statistics.median(ours), statistics.median(theirs)
    print(f"SD 2 U-Net ({params / 1e6:.1f} M params), {args.resolution} px ({args.resolution // 8}x"
          f"{args.resolution // 8} latents), batch {args.batch}, {args.precision}, cached latents, {device.type}"
          f"{' ' + torch.cuda.get_device_name() if cuda else f', {torch.get_num_threads()} thread(s)'}; "
          f"median of {args.repeats}x{args.steps} steps:")
    print(f"  trainer    {t_ours * 1e3:9.1f} ms/step  {args.batch / t_ours:8.2f} images/s")
    print(f"  bare loop  {t_bare * 1e3:9.1f} ms/step  {args.batch / t_bare:8.2f} images/s")
    print(f"  ratio bare/trainer = {t_bare / t_ours:.3f}  (target >= 0.95)")
    if cuda:
        print(f"  images/s per GPU (trainer): {args.batch / t_ours:.2f}; peak memory "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
