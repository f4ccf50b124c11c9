"""`orch pretrain`: the project's own tiny base model for the shapes world.

Three stages on captions that do not teach relations (generic; described: with sizes; web: relation
words drawn at random), then saved in diffusers format so it loads exactly like SD:
1. VAE: reconstruction MSE + a small KL term (SD's VAE recipe without the GAN/LPIPS parts, which
   a 32 px world of flat shapes does not need).
2. Latent scale: scaling_factor = 1 / std of the latents, as SD's 0.18215 was chosen.
3. U-Net and text encoder trained *jointly* on the ε loss, with 10% caption dropout so
   classifier-free guidance works. Why joint rather than contrastive CLIP training: the shapes
   vocabulary is tiny and the only consumer of the embeddings is this U-Net, so the diffusion
   loss alone shapes them usefully, with no image tower to build. Afterwards the text encoder is
   frozen like SD's, so finetuning trials behave as on real weights.

A variant with no encoder to train first (GLIDE-mini: pixel space) has a `pretrain_options` hook
in its spec instead: its own objective with everything trained, run by the generic Trainer
(checkpoints under `<prefix>.run/`, so a killed pretraining resumes), exported with its EMA weights.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from orchestrator.data.captions import CAPTION_STYLES
from orchestrator.data.image_text import ImageTextData, load_image_text_dir
from orchestrator.data.worlds import DEFAULT_WORLD
from orchestrator.manifest.schema import LR_SCHEDULES, TrainSpec
from orchestrator.models.common.diffusion import diffusion_loss, training_target
from orchestrator.models.common.shapes_tokenizer import tokenize
from orchestrator.models.registry import get_variant
from orchestrator.models.sd.latent_cache import encode_latents
from orchestrator.models.sd.pipeline import SDComponents, build_tiny, fresh_denoiser, load_components, save_components
from orchestrator.models.sd.variant import TINY_BASE as SD_TINY_BASE

from .control import LoopConfig, RunControl
from .ema import EMA
from .loop import Trainer
from .metrics import MetricsCallback, StepMetrics
from .state import BatchOrder, DataCursor

log = logging.getLogger(__name__)
TINY_BASE_PREFIX = SD_TINY_BASE  # the default variant's (`orch pretrain` without --variant)


def _data(data_dir: str | Path | None, n: int, seed: int, size: int, captions: str, world: str) -> ImageTextData:
    from orchestrator.data.shapes import write_shapes_dataset

    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="orch-shapes-") as tmp:
            write_shapes_dataset(Path(tmp) / "ds", n=n, seed=seed, size=size, world=world)
            return load_image_text_dir(Path(tmp) / "ds", captions)
    # Always through the writer: it leaves the same dataset in place and refuses a different one
    # (another world, n or seed) instead of training on it unnoticed.
    write_shapes_dataset(data_dir, n=n, seed=seed, size=size, world=world)
    return load_image_text_dir(data_dir, captions)


def train_vae(c: SDComponents, data: ImageTextData, steps: int, batch_size: int, lr: float, seed: int,
              kl_weight: float = 1e-6, log_every: int = 50) -> float:
    vae = c.vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    order, cursor = BatchOrder(len(data), batch_size, seed), DataCursor()
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x = data.pixels(order.next(cursor)).to(vae.device)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(vae.device)
        recon = F.mse_loss(vae.decode(z).sample, x)
        loss = recon + kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0:
            log.info("vae step %d recon %.4f", step, recon.item())
    vae.eval().requires_grad_(False)
    return float(recon.detach()) if steps else float("nan")


@torch.no_grad()
def fit_latent_scale(c: SDComponents, data: ImageTextData, batch_size: int = 256) -> float:
    means = [c.vae.encode(data.pixels(torch.arange(i, min(i + batch_size, len(data)))).to(c.vae.device))
             .latent_dist.mean for i in range(0, len(data), batch_size)]
    scale = float(1.0 / torch.cat(means).std())
    c.vae.register_to_config(scaling_factor=scale)
    return scale


class DenoiserStep:
    """One optimiser step of the U-Net + text encoder on the ε (or v) loss, from cached latents.

    The VAE is frozen by now, so its latent distribution (mean, std) of the whole pretraining set
    is encoded once (latent_cache.encode_latents) and each step only draws a fresh sample from it:
    the same training signal as encoding every step, without a VAE forward per step.
    """

    def __init__(self, c: SDComponents, data: ImageTextData, batch_size: int, lr: float, seed: int, *,
                 caption_dropout: float = 0.1, ema_decay: float | None = None):
        self.c = c
        self.unet, self.te = c.unet.train(), c.text_encoder.train().requires_grad_(True)
        self.params = list(self.unet.parameters()) + list(self.te.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.order, self.cursor = BatchOrder(len(data), batch_size, seed), DataCursor()
        self.g = torch.Generator().manual_seed(seed + 1)
        dev = self.unet.device
        self.mean, self.std = (t.to(dev) for t in encode_latents(c, data))
        self.ids_all = tokenize(c.tokenizer, data.captions).to(dev)
        self.empty = tokenize(c.tokenizer, [""]).to(dev)
        self.caption_dropout = caption_dropout
        self.num_t = c.scheduler.config.num_train_timesteps
        # EMA of the weights for sampling: the last iterate at this lr is noisy (measured: object
        # accuracy 0.07 with EMA vs 0.025 without at 1000 steps; equal, 0.115, at 2000).
        self.emas = None if ema_decay is None else [EMA(self.unet, ema_decay), EMA(self.te, ema_decay)]

    def __call__(self) -> torch.Tensor:
        c, g, dev = self.c, self.g, self.unet.device
        idx = self.order.next(self.cursor)
        mean, std = self.mean[idx], self.std[idx]
        latents = (mean + std * torch.randn(mean.shape, generator=g).to(dev)) * c.latent_scale
        ids = self.ids_all[idx].clone()
        drop = (torch.rand(len(idx), generator=g) < self.caption_dropout).to(dev)
        ids[drop] = self.empty
        noise = torch.randn(latents.shape, generator=g).to(dev)
        t = torch.randint(0, self.num_t, (len(idx),), generator=g).to(dev)
        pred = self.unet(c.scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=self.te(ids)[0]).sample
        loss = diffusion_loss(pred, training_target(c.scheduler, latents, noise, t))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.emas is not None:
            self.emas[0].update(self.unet)
            self.emas[1].update(self.te)
        return loss.detach()

    def finish(self) -> None:
        """Leave the components as they are sampled from: EMA weights if kept, text encoder frozen."""
        if self.emas is not None:
            self.emas[0].copy_to(self.unet)
            self.emas[1].copy_to(self.te)
        self.te.eval().requires_grad_(False)


def train_denoiser(c: SDComponents, data: ImageTextData, steps: int, batch_size: int, lr: float, seed: int,
                   caption_dropout: float = 0.1, on_metrics: MetricsCallback | None = None,
                   log_every: int = 50, **recipe) -> float:
    """`recipe`: DenoiserStep's ema_decay."""
    step_fn = DenoiserStep(c, data, batch_size, lr, seed, caption_dropout=caption_dropout, **recipe)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = step_fn()
        if step % log_every == 0:
            log.info("denoiser step %d loss %.4f", step, loss.item())
        if on_metrics is not None:
            on_metrics({"stage": "denoiser", "step": step + 1, "loss": loss.item()})
    step_fn.finish()
    return float(loss)


def pretrain_base(
    out: str | Path,
    data_dir: str | Path | None = None,
    steps: int = 3000,
    seed: int = 0,
    *,
    n: int = 2000,
    size: int = 32,
    vae_steps: int | None = None,
    batch_size: int = 32,
    vae_lr: float = 1e-3,
    lr: float = 5e-4,
    store=None,
    on_metrics: MetricsCallback | None = None,
    variant: str = "sd",
    init: str | Path | None = None,
    denoiser: str | None = None,
    latent_downsample: int | None = None,
    captions: str = "generic",
    world: str = DEFAULT_WORLD,
    warmup_steps: int = 0,
    lr_schedule: str = "constant",
    **recipe,
) -> str:
    """Pretrain the variant's tiny base and save it: to directory `out`, or to blob prefix `out` if
    a store is given (the trainer looks for it at the variant's spec's `tiny_base`). Returns where it
    went. `recipe`: the denoiser's ema_decay (DenoiserStep).

    `init`: an SD base directory to build on instead of starting from scratch: its VAE, latent scale
    and tokenizer are kept as they are (no VAE stage), and its U-Net and text encoder train `steps`
    more, or, with `denoiser` (a tiny_config size: tiny, small), a new denoiser of that size trains
    from scratch. Why: a from-scratch build retrains the VAE too, and a worse VAE (measured: 3x the
    reconstruction error at the same 400 steps) undoes what the longer denoiser stage gains.
    Without `init`, `denoiser` sets the size of the from-scratch build's denoiser and
    `latent_downsample` its latent grid (tiny_config.LATENT_DOWNSAMPLES; default 4: 8x8 at 32 px).
    `captions`: the shapes caption style it learns from: generic (no sizes, look-alikes counted), or
    described (every object with its size and colour, still no relation), or web (two objects joined
    by a relation word drawn apart from the layout, as unreliable web alt-text). `world`: the shapes world
    it is drawn from (data.worlds: mixed, or pairs, the demo's: two distinct objects per scene)."""
    if captions not in CAPTION_STYLES:
        raise ValueError(f"--captions: {captions!r} is not a shapes caption style; styles: {', '.join(CAPTION_STYLES)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr-schedule: {lr_schedule!r} is not a schedule; schedules: {', '.join(LR_SCHEDULES)}")
    torch.manual_seed(seed)
    data = _data(data_dir, n, seed, size, captions, world)
    v = get_variant(variant)
    if v.pretrain_options is not None:
        if store is None:
            raise ValueError(f"pretraining {variant} runs the generic trainer, which checkpoints to a blob store")
        if denoiser is not None or latent_downsample is not None:
            raise ValueError(f"--denoiser/--latent-downsample: implemented for sd's staged pretraining, not {variant}")
        if warmup_steps >= steps:
            raise ValueError(f"--warmup-steps ({warmup_steps}) must be below --steps ({steps})")
        if init is None and v.pretrain_init is not None:
            raise ValueError(f"--init: pretraining {variant} starts from {v.pretrain_init}")
        return _pretrain_objective(v, out, data, steps, batch_size, lr, seed, size, store, on_metrics, init=init,
                                   warmup_steps=warmup_steps, lr_schedule=lr_schedule, **recipe)
    if warmup_steps or lr_schedule != "constant":
        raise ValueError(f"--warmup-steps/--lr-schedule: implemented for pretraining through a variant's objective, "
                         f"not {variant}'s staged recipe")
    if init is not None:
        if latent_downsample is not None:
            raise ValueError("--latent-downsample builds a new VAE; --init keeps its base's (and its latent grid)")
        c = load_components(init)
        vae_loss, scale = float("nan"), c.latent_scale
        if denoiser is not None:
            c = fresh_denoiser(c, seed, denoiser)
        # Continuing draws a fresh batch order and noise: replaying the first build's seed would repeat its draws.
        loss = train_denoiser(c, data, steps, batch_size, lr, seed if denoiser else seed + 1, on_metrics=on_metrics,
                              **recipe)
    else:
        c = build_tiny(seed, size, data.captions, latent_downsample or 4)
        if denoiser is not None:
            c = fresh_denoiser(c, seed, denoiser)
        vae_loss = train_vae(c, data, steps if vae_steps is None else vae_steps, batch_size, vae_lr, seed)
        scale = fit_latent_scale(c, data)
        loss = train_denoiser(c, data, steps, batch_size, lr, seed, on_metrics=on_metrics, **recipe)
    log.info("pretrained tiny base: vae recon %.4f, latent scale %.3f, denoiser loss %.4f", vae_loss, scale, loss)
    c.unet.eval()
    return save_components(c, out, store=store)


def _pretrain_objective(v, out: str, data: ImageTextData, steps: int, batch_size: int, lr: float, seed: int,
                        size: int, store, on_metrics: MetricsCallback | None, init: str | Path | None = None,
                        warmup_steps: int = 0, lr_schedule: str = "constant",
                        ema_decay: float | None = None) -> str:
    """The variant's own objective on its tiny architecture (fresh, or the model directory `init`),
    with its pretrain_options."""
    model = v.load(Path(init)) if init is not None else v.build_tiny(seed, size, data.captions)
    spec = TrainSpec(steps=steps, batch_size=batch_size, lr=lr, seed=seed, ema_decay=ema_decay,
                     warmup_steps=warmup_steps, lr_schedule=lr_schedule, checkpoint_every=max(1, min(500, steps)))

    def report(m: StepMetrics) -> None:
        if m.step % 50 == 0:
            log.info("%s denoiser step %d loss %.4f", v.name, m.step, m.loss)
        if on_metrics is not None:
            on_metrics({"stage": "denoiser", "step": m.step, "loss": m.loss})

    trainer = Trainer(v, model, data, spec, store, f"{out}.run", options=v.pretrain_options(),
                      config=LoopConfig(export_model=False, keep_last=1), control=RunControl(on_metrics=report))
    result = trainer.run()
    trainer.export(out)
    log.info("pretrained tiny %s base: loss %s", v.name, result.final_loss)
    return out
