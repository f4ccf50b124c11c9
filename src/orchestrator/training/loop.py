"""The trainer: one SD fine-tuning run (U-Net trained, VAE and text encoder frozen), in-process.

A run is a few plain parts (nanoGPT/torchtitan style): data order + cursor (state.py), the
frozen encoders or their cached outputs (latent_cache.py), the step (losses.py, optim.py,
ema.py), checkpoints in the blob store (checkpoint.py), metrics out through a callback.

Exact resume: every source of randomness in a step draws from one torch.Generator whose state is
checkpointed with the model, optimiser, LR schedule, grad scaler, global RNGs and the data cursor,
and the LR schedule is defined over the run's full length, so a run stopped at any checkpoint and
resumed follows the uninterrupted run bit for bit (CPU, same thread count).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

import torch

from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.sd.pipeline import SDComponents, save_components
from orchestrator.models.sd.tokenizer import tokenize

from .checkpoint import CheckpointStore
from orchestrator.data.image_text import ImageTextData
from .distributed import DistContext, all_reduce_mean_, shard_indices
from .ema import EMA
from .latent_cache import EncodedShard, LatentCache
from .losses import diffusion_loss, min_snr_weights, sample_noise, training_target
from .metrics import MetricsCallback, StepMetrics
from .optim import make_optimizer, make_scheduler
from .state import BatchOrder, DataCursor, capture_rng, restore_rng

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainResult:
    step: int                    # optimiser steps completed in total
    total_steps: int             # the run's configured length
    steps_run: int               # steps run by this call (after any resume)
    resumed_from: int | None     # the checkpoint step this call started from
    final_loss: float | None
    checkpoint: str | None       # blob key of the last checkpoint written or found
    model_prefix: str | None     # blob prefix of the exported diffusers model (when finished)
    wall_s: float
    it_per_s: float
    cache_hits: dict | None = None

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def set_deterministic(num_threads: int | None = None) -> None:
    """Deterministic kernels where torch has them (warn elsewhere) and a fixed CPU thread count."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    if num_threads:
        torch.set_num_threads(num_threads)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    def __init__(
        self,
        components: SDComponents,
        data: ImageTextData,
        spec: TrainSpec,
        store,
        run_prefix: str,
        *,
        device: torch.device | str | None = None,
        use_cache: bool = True,
        cache_prefix: str = "cache/sd",
        caption_dropout: float = 0.0,
        on_metrics: MetricsCallback | None = None,
        progress: bool = False,
        keep_last: int | None = 3,
        export_model: bool = True,
        distributed: DistContext | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.c = components.to(self.device)
        self.c.freeze_encoders()
        self.unet = self.c.unet
        self.unet.train()
        if spec.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.data, self.spec, self.store, self.run_prefix = data, spec, store, run_prefix.rstrip("/")
        self.caption_dropout = caption_dropout
        self.on_metrics, self.show_progress, self.export_model = on_metrics, progress, export_model
        self.dist = distributed  # None: single process, the path below is unchanged by data parallelism

        torch.manual_seed(spec.seed)
        self.gen = torch.Generator().manual_seed(spec.seed)  # all per-step randomness, on CPU
        self.order = BatchOrder(len(data), spec.batch_size, spec.seed)
        self.cursor = DataCursor()
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, spec.optimizer, spec.lr, spec.weight_decay, self.device)
        self.lr_sched = make_scheduler(self.opt, spec.warmup_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=spec.precision == "fp16")
        self.ema = EMA(self.unet, spec.ema_decay) if spec.ema_decay else None
        self.alphas_cumprod = self.c.scheduler.alphas_cumprod.to(self.device)
        self.num_train_timesteps = int(self.c.scheduler.config.num_train_timesteps)
        self.step = 0
        self.ckpts = CheckpointStore(store, f"{self.run_prefix}/checkpoints", keep_last=keep_last)

        self.encoded: EncodedShard | None = None
        self.cache_hits: dict | None = None
        if use_cache:
            self.encoded, self.cache_hits = LatentCache(store, cache_prefix).load_or_encode(self.c, data)
            self.encoded = EncodedShard(*(t.to(self.device) for t in (
                self.encoded.latent_mean, self.encoded.latent_std, self.encoded.text_index,
                self.encoded.text_emb, self.encoded.uncond_emb)))
            self.uncond = self.encoded.uncond_emb
        else:
            with torch.no_grad():
                ids = tokenize(self.c.tokenizer, [""]).to(self.device)
                self.uncond = self.c.text_encoder(ids)[0][0].float()

    # ---- one step ------------------------------------------------------------------
    def _inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent distribution (mean, std) and text embeddings for the examples `idx`."""
        if self.encoded is not None:
            dev_idx = idx.to(self.device)
            return (self.encoded.latent_mean[dev_idx], self.encoded.latent_std[dev_idx],
                    self.encoded.text_for(dev_idx))
        with torch.no_grad():
            vae = self.c.vae
            dist = vae.encode(self.data.pixels(idx).to(self.device, vae.dtype)).latent_dist
            ids = tokenize(self.c.tokenizer, [self.data.captions[i] for i in idx.tolist()]).to(self.device)
            text = self.c.text_encoder(ids)[0]
        return dist.mean.float(), dist.std.float(), text.float()

    def _micro_loss(self) -> torch.Tensor:
        if self.dist is not None:
            return self._shard_micro_loss()
        idx = self.order.next(self.cursor)
        mean, std, text = self._inputs(idx)
        b, g = len(idx), self.gen
        latents = (mean + std * torch.randn(mean.shape, generator=g).to(self.device)) * self.c.latent_scale
        if self.caption_dropout > 0:
            drop = (torch.rand(b, generator=g) < self.caption_dropout).to(self.device)
            text = torch.where(drop[:, None, None], self.uncond.expand_as(text), text)
        noise = sample_noise(latents.shape, g, self.spec.noise_offset).to(self.device)
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=g).to(self.device)
        return self._loss(latents, noise, t, text)

    def _shard_micro_loss(self) -> torch.Tensor:
        """One rank of a data-parallel group: the same random draws as one process over the whole
        global batch (so the generator stays in step), but only this rank's shard of the examples
        is loaded and run: `shard_indices`, the rule the ShardPlanner hands out."""
        epoch, position = self.cursor.epoch, self.cursor.position
        b, g = self.order.next(self.cursor).numel(), self.gen
        rows = self.dist.rows(b)
        mean, std, text = self._inputs(shard_indices(self.order, epoch, position, self.dist.rank, self.dist.world_size))
        full = (b, *mean.shape[1:])
        latents = (mean + std * torch.randn(full, generator=g)[rows].to(self.device)) * self.c.latent_scale
        if self.caption_dropout > 0:
            drop = (torch.rand(b, generator=g) < self.caption_dropout)[rows].to(self.device)
            text = torch.where(drop[:, None, None], self.uncond.expand_as(text), text)
        noise = sample_noise(full, g, self.spec.noise_offset)[rows].to(self.device)
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=g)[rows].to(self.device)
        return self._loss(latents, noise, t, text)

    def _loss(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        noisy = self.c.scheduler.add_noise(latents, noise, t)
        with _autocast(self.device, self.spec.precision):
            pred = self.unet(noisy, t, encoder_hidden_states=text.to(self.unet.dtype)).sample
        weights = (min_snr_weights(self.alphas_cumprod, t, self.spec.min_snr_gamma,
                                   self.c.scheduler.config.prediction_type)
                   if self.spec.min_snr_gamma else None)
        return diffusion_loss(pred, training_target(self.c.scheduler, latents, noise, t), weights)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for _ in range(self.spec.grad_accum):
            loss = self._micro_loss()
            self.scaler.scale(loss / self.spec.grad_accum).backward()
            total += loss.detach()
        if self.dist is not None:
            all_reduce_mean_(self.params, self.dist.world_size)
        grad_norm = None
        if self.spec.grad_clip:
            self.scaler.unscale_(self.opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.lr_sched.step()
        if self.ema is not None:
            self.ema.update(self.unet)
        self.step += 1
        return total / self.spec.grad_accum, grad_norm

    # ---- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "unet": self.unet.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.opt.state_dict(),
            "lr_scheduler": self.lr_sched.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng": capture_rng(self.gen),
            "cursor": self.cursor.state_dict(),
            "train_spec": self.spec.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        self.unet.load_state_dict(state["unet"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError("checkpoint has no EMA state but the run uses EMA")
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.lr_sched.load_state_dict(state["lr_scheduler"])
        if state["grad_scaler"]:
            self.scaler.load_state_dict(state["grad_scaler"])
        restore_rng(state["rng"], self.gen)
        self.cursor = DataCursor.from_state(state["cursor"])
        self.step = int(state["step"])

    def resume(self) -> int | None:
        """Load the newest verified checkpoint of this run; its step, or None if there is none."""
        found = self.ckpts.load_latest(map_location=self.device)
        if found is None:
            return None
        ref, state = found
        self.load_state_dict(state)
        log.info("resumed from %s (step %d)", ref.key, ref.step)
        return ref.step

    # ---- the run -------------------------------------------------------------------
    @property
    def _writes(self) -> bool:
        """Only rank 0 of a data-parallel group writes checkpoints and the exported model."""
        return self.dist is None or self.dist.is_main

    def run(self, max_steps: int | None = None, resume: bool = True) -> TrainResult:
        """Train to `spec.steps` (or stop at `max_steps`, checkpointing there); resumable."""
        started = time.perf_counter()
        resumed_from = self.resume() if resume else None
        target = min(self.spec.steps, max_steps) if max_steps else self.spec.steps
        first, loss_value, last_ckpt = self.step, None, None
        if resumed_from is not None:
            last_ckpt = self.ckpts.refs()[0].key if self.ckpts.refs() else None
        bar = None
        if self.show_progress and self.step < target:
            from .progress import TrainProgress
            bar = TrainProgress(f"train {self.run_prefix}", self.spec.steps, self.step)
        with bar or contextlib.nullcontext():
            t0 = time.perf_counter()
            while self.step < target:
                loss, grad_norm = self.train_step()
                ckpt = None
                if (self.step % self.spec.checkpoint_every == 0 or self.step == target) and self._writes:
                    ckpt = last_ckpt = self.ckpts.save(self.step, self.state_dict()).key
                if self.on_metrics is not None or bar is not None:
                    loss_value = float(loss)
                    m = StepMetrics(
                        step=self.step, total_steps=self.spec.steps, loss=loss_value,
                        lr=self.opt.param_groups[0]["lr"],
                        grad_norm=None if grad_norm is None else float(grad_norm),
                        it_per_s=(self.step - first) / max(time.perf_counter() - t0, 1e-9),
                        epoch=self.cursor.epoch, checkpoint=ckpt)
                    if bar is not None:
                        bar.update(m)
                    if self.on_metrics is not None:
                        self.on_metrics(m)
                elif self.step == target:
                    loss_value = float(loss)
        ran = self.step - first
        model_prefix = None
        if self.step >= self.spec.steps and self.export_model and self._writes:
            model_prefix = f"{self.run_prefix}/model"
            if ran > 0 or not self.store.exists(f"{model_prefix}/model_index.json"):
                self.export(model_prefix)
        wall = time.perf_counter() - started
        return TrainResult(self.step, self.spec.steps, ran, resumed_from, loss_value, last_ckpt, model_prefix,
                           wall, ran / wall if wall > 0 else 0.0, self.cache_hits)

    def export(self, prefix: str) -> str:
        """Save the diffusers directory (EMA weights when EMA is on) under a blob prefix."""
        backup = None
        if self.ema is not None:
            backup = [p.detach().clone() for p in self.params]
            self.ema.copy_to(self.unet)
        try:
            return save_components(self.c, prefix, store=self.store)
        finally:
            if backup is not None:
                with torch.no_grad():
                    for p, b in zip(self.params, backup):
                        p.copy_(b)
