"""The trainer: one training run of any variant's objective, in-process.

A run is a few plain parts (nanoGPT/torchtitan style): data order + cursor (state.py), the
variant's objective (what is trained and the loss of a batch: models/<variant>/), the step
(optim.py, ema.py, precision, accumulation), checkpoints in the blob store (checkpoint.py),
metrics out through a callback. Nothing here knows which variant it trains.

Exact resume: every draw a step makes comes from the run's own torch.Generator, whose state is
checkpointed with the trained modules, EMA, optimiser, LR schedule, grad scaler and the data
cursor, or from a global RNG (dropout) seeded from (seed, step) before the step; the LR schedule
is defined over the run's full length. So a run stopped at any checkpoint and resumed follows
the uninterrupted run bit for bit (CPU, same thread count), and writes the same checkpoint bytes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from orchestrator.data.image_text import ImageTextData
from orchestrator.manifest.schema import TrainSpec
from orchestrator.models.common.objective import Batch, trainable
from orchestrator.models.registry import Variant
from orchestrator.storage.location import put_dir
from orchestrator.telemetry import Recorder
from orchestrator.telemetry import current as telemetry

from .checkpoint import CheckpointStore, encode
from .control import LoopConfig, RunControl
from .distributed import DistContext, all_reduce_mean_, shard_indices
from .ema import EMA
from .metrics import StepMetrics
from .optim import make_optimizer, make_scheduler
from .state import BatchOrder, DataCursor, capture_rng, restore_rng, seed_global_rngs
from .uploader import CheckpointUploader

log = logging.getLogger(__name__)

class CheckpointsMissing(RuntimeError):
    """The journal recorded checkpoints of this run and none of them is left in the store."""


CHECKPOINT_FORMAT = 2  # 2: trained modules by name, EMA with parameter names, the model's origin
TELEMETRY_EVERY_S = 1.0  # gauges (loss, lr, memory) are sampled: reading the loss syncs a GPU


@dataclass(frozen=True)
class TrainResult:
    step: int                    # optimiser steps completed in total
    total_steps: int             # the run's configured length
    steps_run: int               # steps run by this call (after any resume)
    resumed_from: int | None     # the checkpoint step this call started from
    final_loss: float | None
    checkpoint: str | None       # blob key of the last checkpoint written or found
    model_prefix: str | None     # blob prefix of the exported model directory (when finished)
    wall_s: float
    it_per_s: float
    cache_hits: dict | None = None
    preempted: bool = False      # stopped early on request (checkpointed at that step; resumable)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


NO_TELEMETRY = Recorder()


@contextlib.contextmanager
def _inactive_after(rec: Recorder):
    try:
        yield
    finally:
        rec.train_active(False)


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
    """Train `model` (of `variant`) on `data` as `spec` says; checkpoints under `run_prefix`.

    `options` is the variant's options section (`model.<variant>`); `origin` (the trial's model
    section and manifest directory) is recorded in checkpoints, so `load_model` can rebuild
    the base a checkpoint was trained from without the manifest. `config` says how the loop runs,
    `control` how its caller steers and hears it (control.py); `distributed` makes this one rank
    of a data-parallel group.
    """

    def __init__(
        self,
        variant: Variant,
        model: Any,
        data: ImageTextData,
        spec: TrainSpec,
        store,
        run_prefix: str,
        *,
        options: Any = None,
        origin: dict | None = None,
        config: LoopConfig | None = None,
        control: RunControl | None = None,
        distributed: DistContext | None = None,
    ):
        self.config = config = LoopConfig() if config is None else config
        self.control = RunControl() if control is None else control
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.variant, self.model, self.origin = variant, model, origin
        for m in variant.modules(model).values():
            m.to(self.device)
        self.spec, self.store, self.run_prefix = spec, store, run_prefix.rstrip("/")
        self.dist = distributed  # None: single process, the path below is unchanged by data parallelism
        # `control.stop` preempts one process only: a data-parallel group's ranks would have to
        # agree on the step first, so a rank of one is never asked.
        self._stop = self.control.stop if distributed is None else None
        self.objective = variant.objective(model, data, spec, options, store=store, device=self.device,
                                           use_cache=config.use_cache)
        self.trained = trainable(self.objective.modules)

        self.gen = torch.Generator().manual_seed(spec.seed)  # the objective's draws, on CPU
        self.order = BatchOrder(self.objective.num_examples, spec.batch_size, spec.seed)
        self.cursor = DataCursor()
        self.params = [p for p in self.trained.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, spec.optimizer, spec.lr, spec.weight_decay, self.device)
        self.lr_sched = make_scheduler(self.opt, spec.warmup_steps, spec.steps, spec.lr_schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=spec.precision == "fp16")
        self.ema = EMA(self.trained, spec.ema_decay) if spec.ema_decay else None
        self.autocast = partial(_autocast, self.device, spec.precision)
        self.step = 0
        self.data_wait_s = 0.0  # time spent drawing batches, since the last step was reported
        self.ckpts = CheckpointStore(store, f"{self.run_prefix}/checkpoints", keep_last=config.keep_last)
        # Checkpoints upload while the next steps train (uploader.py); reported once landed.
        self.uploader = CheckpointUploader(self.ckpts.write, config.background_upload)

    @property
    def cache_hits(self) -> dict | None:
        return getattr(self.objective, "cache_hits", None)

    # ---- one step ------------------------------------------------------------------
    def _batch(self) -> Batch:
        """The next batch: all of it in one process; in a data-parallel group, this rank's shard
        (`shard_indices`, the rule the ShardPlanner hands out) with draws made for the whole."""
        started = time.perf_counter()
        if self.dist is None:
            idx = self.order.next(self.cursor)
            batch = Batch(idx, len(idx), self.gen, autocast=self.autocast)
        else:
            epoch, position = self.cursor.epoch, self.cursor.position
            size = self.order.next(self.cursor).numel()
            idx = shard_indices(self.order, epoch, position, self.dist.rank, self.dist.world_size)
            batch = Batch(idx, size, self.gen, rows=self.dist.rows(size), autocast=self.autocast)
        self.data_wait_s += time.perf_counter() - started
        return batch

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        seed_global_rngs(self.spec.seed, self.step)  # what draws from them (dropout) is a function of the step
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for _ in range(self.spec.grad_accum):
            loss = self.objective.loss(self._batch())
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
            self.ema.update(self.trained)
        self.step += 1
        return total / self.spec.grad_accum, grad_norm

    # ---- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "variant": self.variant.name,
            "origin": self.origin,
            "modules": {name: m.state_dict() for name, m in self.objective.modules.items()},
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
        if sorted(state["modules"]) != sorted(self.objective.modules):
            raise ValueError(f"checkpoint trains {sorted(state['modules'])}, this run {sorted(self.objective.modules)}")
        for name, m in self.objective.modules.items():
            m.load_state_dict(state["modules"][name])
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
        """Load the newest verified checkpoint of this run; its step, or None if there is none.

        Every fallback is said (log and `on_notice`): a damaged checkpoint passed over, an older
        one used where the journal recorded a newer one. If the journal recorded a checkpoint
        (`control.expect_checkpoint`) and none is left, the run stops (CheckpointsMissing) unless
        `control.restart_missing` says to train from step 0 — which is said too."""
        found = self.ckpts.load_latest(map_location=self.device)
        for ref, reason in self.ckpts.skipped:
            self._notice("checkpoint_skipped", key=ref.key, step=ref.step, reason=reason)
        expected = self.control.expect_checkpoint
        if found is None:
            if expected is not None:
                where = f"{self.run_prefix}/checkpoints/ in {self.store!r}"
                if not self.control.restart_missing:
                    raise CheckpointsMissing(  # the remedy first: a one-line summary keeps the start
                        f"journaled checkpoints (up to step {expected}) are gone; `orch resume --restart-missing` "
                        f"trains the trial again from step 0 (nothing usable under {where})")
                self._notice("restarted_from_scratch", expected_step=expected,
                             reason=f"no usable checkpoint under {where}")
            return None
        ref, state = found
        self.load_state_dict(state)
        self.uploader.adopt(ref)
        log.info("resumed from %s (step %d)", ref.key, ref.step)
        if expected is not None and ref.step < expected:
            self._notice("resumed_from_older", expected_step=expected, step=ref.step, key=ref.key)
        return ref.step

    def _notice(self, kind: str, **details: Any) -> None:
        log.warning("%s: %s", kind.replace("_", " "), ", ".join(f"{k}={v}" for k, v in details.items()))
        if self.control.on_notice is not None:
            self.control.on_notice(kind, details)

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
        if self.control.progress and self._writes and self.step < target:
            from .progress import TrainProgress
            bar = TrainProgress(f"train {self.run_prefix}", self.spec.steps, self.step)
        # Only the process that writes reports: a data-parallel group's ranks would count each step N times.
        rec = telemetry() if self._writes else NO_TELEMETRY
        rec.train_active(True)
        with bar or contextlib.nullcontext(), _inactive_after(rec), self._uploads_settled():
            t0 = last_state = time.perf_counter()
            state_step, preempted = self.step, False
            while self.step < target:
                step_t0 = time.perf_counter()
                loss, grad_norm = self.train_step()
                if rec.enabled:
                    now = time.perf_counter()
                    rec.train_step(seconds=now - step_t0, data_wait_s=self.data_wait_s, samples=self._samples)
                    if now - last_state >= TELEMETRY_EVERY_S or self.step == target:
                        steps_per_s = (self.step - state_step) / max(now - last_state, 1e-9)
                        self._report_state(rec, loss, grad_norm, steps_per_s)
                        last_state, state_step = now, self.step
                self.data_wait_s = 0.0
                if self.control.guard is not None:
                    self.control.guard()
                preempted = self._stop is not None and self.step < target and self._stop()
                if (self.step % self.spec.checkpoint_every == 0 or self.step == target or preempted) \
                        and self._writes:
                    last_ckpt = self._save_checkpoint(rec)
                # The run's last checkpoint lands before it returns; a rung's before it is reported.
                if self.step == target or preempted or self.step in self.control.land_at:
                    self.uploader.wait()
                landed = self.uploader.landed()
                if self.control.on_metrics is not None or bar is not None:
                    loss_value = float(loss)
                    m = StepMetrics(
                        step=self.step, total_steps=self.spec.steps, loss=loss_value,
                        lr=self.opt.param_groups[0]["lr"],
                        grad_norm=None if grad_norm is None else float(grad_norm),
                        it_per_s=(self.step - first) / max(time.perf_counter() - t0, 1e-9),
                        epoch=self.cursor.epoch)
                    if bar is not None:
                        bar.update(m)
                    self._report(m, landed)
                elif self.step == target or preempted:
                    loss_value = float(loss)
                if preempted:
                    log.info("preempted at step %d (checkpoint %s)", self.step, last_ckpt)
                    break
        ran = self.step - first
        model_prefix = None
        if self.step >= self.spec.steps and self.config.export_model and self._writes:
            model_prefix = f"{self.run_prefix}/model"
            if ran > 0 or not self.store.exists(f"{model_prefix}/model_index.json"):
                self.export(model_prefix)
        wall = time.perf_counter() - started
        return TrainResult(self.step, self.spec.steps, ran, resumed_from, loss_value, last_ckpt, model_prefix,
                           wall, ran / wall if wall > 0 else 0.0, self.cache_hits, preempted)

    @property
    def _samples(self) -> int:
        """Examples one optimiser step consumes (all ranks together)."""
        return self.spec.batch_size * self.spec.grad_accum

    def _report_state(self, rec, loss: torch.Tensor, grad_norm, steps_per_s: float) -> None:
        cuda = None
        if self.device.type == "cuda":
            try:
                utilization = torch.cuda.utilization(self.device) / 100.0
            except Exception:  # noqa: BLE001 - NVML (pynvml) missing or unsupported: memory only
                utilization = None
            cuda = (torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device), utilization)
        rec.train_state(loss=float(loss), lr=self.opt.param_groups[0]["lr"],
                        grad_norm=None if grad_norm is None else float(grad_norm),
                        samples_per_s=steps_per_s * self._samples, cuda=cuda)

    def _report(self, m: StepMetrics, landed: list) -> None:
        if self.control.on_metrics is not None:
            self.control.on_metrics(dataclasses.replace(m, checkpoint=landed[-1].key, checkpoints=tuple(
                (ref.step, ref.key) for ref in landed)) if landed else m)

    @contextlib.contextmanager
    def _uploads_settled(self):
        """No upload outlives `run`: a failure while one is in flight still waits for it."""
        try:
            yield
        except BaseException:
            try:
                self.uploader.wait()
            except Exception as exc:  # noqa: BLE001 - the training error is the one to raise
                log.error("checkpoint upload failed too: %s", exc)
            raise

    def _save_checkpoint(self, rec) -> str:
        """Encode the state now (a snapshot) and hand it to the uploader; its future key."""
        started = time.perf_counter()
        try:
            data = encode(self.state_dict())
            self.uploader.submit(self.step, data)
        except Exception:
            rec.checkpoint_failed()
            raise
        rec.checkpoint_saved(seconds=time.perf_counter() - started, nbytes=len(data))
        return self.ckpts.key(self.step)

    def export(self, prefix: str) -> str:
        """Save the variant's model directory (EMA weights when EMA is on) under a blob prefix."""
        backup = None
        if self.ema is not None:
            backup = [p.detach().clone() for p in self.params]
            self.ema.copy_to(self.trained)
        try:
            with tempfile.TemporaryDirectory(prefix="orch-export-") as tmp:
                self.variant.export(self.model, Path(tmp))
                put_dir(self.store, tmp, prefix)
            return prefix
        finally:
            if backup is not None:
                with torch.no_grad():
                    for p, b in zip(self.params, backup):
                        p.copy_(b)
