"""SD3 trainer benchmarks, each side by side in one process on the same tiny SD3 (MMDiT) and batch.

1. Step time: the project's Trainer on the sd3 variant against a bare hand-written PyTorch +
   diffusers loop doing a step as diffusers' SD3 training scripts do (latent from the frozen VAE,
   shifted and scaled; prompt from the two frozen CLIPs, T5's part zeros; σ-index u logit-normal,
   σ and timestep read from the flow-matching scheduler's tables; x_σ = (1 − σ)·x0 + σ·ε;
   transformer; MSE on ε − x0; backward, clip, AdamW). Twice: with every encoder run each step on
   both sides, then with the encodings precomputed on both sides (the Trainer's latent/text cache
   against tensors the loop encoded once up front). Ratio = hand-loop time / trainer time; the
   target is >= 0.95.
2. LoRA (`model.sd3.lora`, rank 4 on the both-stream attention projections) against full
   finetuning, both through the Trainer (cached latents/text, EMA as bench_lora.py):
   ratio = full-finetune time / LoRA time (above 1: LoRA is faster).

Runs alternate between the contenders so machine-load drift hits both alike; medians reported.
    python benchmarks/bench_sd3.py [--steps 20] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from _timing import side_by_side, step_arguments  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import ImageTextData, shapes_data
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.models.sd3 import SD3Components, build_tiny
from orchestrator.storage import open_store
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer


@torch.no_grad()
def encode_text(c: SD3Components, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scripts' prompt encoding without T5: each CLIP's penultimate hidden state, joined on
    channels and zero-padded to the transformer's text width, then T5's token length of zeros on
    the sequence; pooled: the CLIPs' projections joined."""
    states, pooled = [], []
    for tok, enc in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
        ids = tok(captions, padding="max_length", max_length=c.tokenizer.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled.append(out[0])
    width = c.transformer.config.joint_attention_dim
    clip = torch.nn.functional.pad(torch.cat(states, dim=-1), (0, width - sum(s.shape[-1] for s in states)))
    t5 = clip.new_zeros(len(captions), c.max_sequence_length, width)
    return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


def hand_loop(data: ImageTextData, batch_size: int, lr: float, seed: int, *, precomputed: bool):
    """A step of diffusers' train_dreambooth_sd3 / train_text_to_image_sd3, reduced to its
    essentials (no accelerate). `precomputed`: latent distributions and prompt embeddings are
    encoded once before training (as the scripts' cached-latents / precomputed-prompt paths),
    so a step only samples the latent."""
    c = build_tiny(seed=0)
    for frozen in (c.vae, c.text_encoder, c.text_encoder_2):  # eval, as from_pretrained leaves them
        frozen.requires_grad_(False).eval()
    transformer = c.transformer.train()
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=1e-2)
    sched = FlowMatchEulerDiscreteScheduler.from_config(c.scheduler.config)  # the scripts' scheduler copy
    n_t = sched.config.num_train_timesteps
    shift, scale = c.vae.config.shift_factor or 0.0, c.vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    pos = 0

    if precomputed:
        with torch.no_grad():
            dist = c.vae.encode(data.pixels(torch.arange(len(data)))).latent_dist
            means, stds = dist.mean, dist.std
        embs, pools = encode_text(c, data.captions)

    def step():
        nonlocal pos
        idx = perm[pos:pos + batch_size]
        pos = (pos + batch_size) % (len(data) - batch_size + 1)
        if precomputed:
            mean, std = means[idx], stds[idx]
            emb, pooled = embs[idx], pools[idx]
        else:
            with torch.no_grad():
                dist = c.vae.encode(data.pixels(idx)).latent_dist
                mean, std = dist.mean, dist.std
            emb, pooled = encode_text(c, [data.captions[i] for i in idx.tolist()])
        x0 = (mean + std * torch.randn(mean.shape, generator=g) - shift) * scale
        noise = torch.randn(x0.shape, generator=g)
        u = compute_density_for_timestep_sampling("logit_normal", len(idx), logit_mean=0.0, logit_std=1.0,
                                                  generator=g)
        # The scripts look each timestep's σ up by matching timesteps; indexing both tables by the
        # same index gives the same σ, a little cheaper (it favours the hand loop, if anything).
        t_idx = (u * n_t).long()
        timesteps, sigma = sched.timesteps[t_idx], sched.sigmas[t_idx].view(-1, 1, 1, 1)
        noisy = (1.0 - sigma) * x0 + sigma * noise
        pred = transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=emb,
                           pooled_projections=pooled, return_dict=False)[0]
        w = compute_loss_weighting_for_sd3("logit_normal", sigma)
        loss = (w.float() * (pred.float() - (noise - x0).float()) ** 2).reshape(len(idx), -1).mean(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> None:
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, n=256, argv=argv)
    data = shapes_data(args.n, seed=0, size=32, caption="spatial")
    spec = TrainSpec(steps=10**6, batch_size=args.batch_size, lr=1e-4, checkpoint_every=10**6, seed=0)
    store = open_store(tempfile.mkdtemp(prefix="bench-sd3-"))
    sd3 = get_variant("sd3")

    # --- 1. trainer vs hand-written loop, same work per step
    print(f"step time (batch {args.batch_size}, 32 px, {args.threads} thread(s), "
          f"median of {args.repeats}x{args.steps}):")
    for cached, what in ((False, "every encoder run each step"), (True, "encodings precomputed")):
        trainer = Trainer(sd3, build_tiny(seed=0), data, spec, store, f"bench/step-{cached}",
                          config=LoopConfig(use_cache=cached, export_model=False))
        hand = hand_loop(data, args.batch_size, spec.lr, 0, precomputed=cached)
        t_ours, t_hand = side_by_side(trainer.train_step, hand, args.steps, args.repeats)
        print(f" {what}:")
        print(f"  trainer      {t_ours * 1e3:8.2f} ms/step")
        print(f"  hand loop    {t_hand * 1e3:8.2f} ms/step")
        print(f"  ratio hand/trainer = {t_hand / t_ours:.3f}  (target >= 0.95)")

    # --- 2. LoRA vs full finetune, both through the Trainer
    ema_spec = spec.model_copy(update={"ema_decay": 0.999})

    def trainer(section: dict | None, prefix: str) -> Trainer:
        model = ModelSpec.model_validate({"variant": "sd3", "base": "tiny-random",
                                          "sd3": {"lora": section} if section is not None else {}},
                                         context={"check_files": False})
        return Trainer(sd3, sd3.load_base(model, None, None), data, ema_spec, store, prefix,
                       options=model.options, config=LoopConfig(export_model=False))

    lora, full = trainer({"rank": 4}, "bench/lora"), trainer(None, "bench/full")
    t_lora, t_full = side_by_side(lora.train_step, full.train_step, args.steps, args.repeats)
    print(f"LoRA vs full finetune (cached latents/text, EMA, median of {args.repeats}x{args.steps}):")
    print(f"  LoRA rank 4    {t_lora * 1e3:8.2f} ms/step  ({sum(p.numel() for p in lora.params):,} trained parameters)")
    print(f"  full finetune  {t_full * 1e3:8.2f} ms/step  ({sum(p.numel() for p in full.params):,} trained parameters)")
    print(f"  ratio full/lora = {t_full / t_lora:.3f}")


if __name__ == "__main__":
    main()
