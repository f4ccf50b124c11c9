"""`orch train`, `orch pretrain`, `orch sample`: the ML core in this process, no Ray."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ..data.worlds import DEFAULT_WORLD
from ..manifest import ManifestError
from .common import SamplerName, TextFormat, bad_manifest, emit_json, err, out, run_errors


def train(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    trial: str = typer.Option(..., "--trial", help="Trial id, unique id prefix, or index in plan order."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this global step (resumable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse cached VAE latents and text embeddings."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (fixed for bitwise resume)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Run one trial of a manifest in-process, without Ray; resumes from its newest verified checkpoint."""
    import signal

    from ..training import LoopConfig, RunControl, train_trial

    caught: list[int] = []  # SIGTERM/SIGINT: checkpoint at the next step boundary, then exit 128 + signal
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = train_trial(file, trial, max_steps=max_steps,
                             control=RunControl(progress=progress and format is TextFormat.text,
                                                stop=lambda: bool(caught)),
                             config=LoopConfig(use_cache=cache, num_threads=threads))
    except ManifestError as exc:
        bad_manifest(exc, format.value, file)
    except (KeyError, FileNotFoundError, NotImplementedError, ValueError) as exc:
        err.print(f"orch train: {exc.args[0] if exc.args else exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        err.print(f"orch train: preempted by {signal.Signals(caught[0]).name} at step {result.step}, "
                  f"checkpoint {result.checkpoint}; run it again to continue", markup=False, soft_wrap=True)
        raise typer.Exit(128 + caught[0])
    if format is TextFormat.json:
        emit_json({**dataclasses.asdict(result), "finished": result.finished})
    else:
        state = "finished" if result.finished else f"stopped at step {result.step}/{result.total_steps}"
        loss = "n/a (nothing left to run)" if result.final_loss is None else f"{result.final_loss:.4f}"
        out.print(f"[green]{state}[/]: {result.steps_run} step(s) run, loss {loss}, checkpoint {result.checkpoint}")


def pretrain(
    blobs: str = typer.Option(..., "--blobs", help="Blob store to cache the base in (a manifest's storage.blobs)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Shapes dataset to train on (generated if missing)."),
    steps: int = typer.Option(3000, "--steps", min=1),
    vae_steps: int = typer.Option(None, "--vae-steps", min=1),
    n: int = typer.Option(2000, "--n", min=1),
    size: int = typer.Option(32, "--size"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    lr: float = typer.Option(5e-4, "--lr", help="Denoiser learning rate."),
    ema_decay: float = typer.Option(None, "--ema-decay", help="Save an EMA of the denoiser's weights."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0, help="Linear learning-rate warm-up (variants "
                                     "pretrained through their objective: sd3, glide_mini)."),
    lr_schedule: str = typer.Option("constant", "--lr-schedule", help="After the warm-up: constant, or cosine or "
                                    "linear decay to zero at --steps (as --warmup-steps)."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads (deterministic kernels)."),
    variant: str = typer.Option("sd", "--variant", help="Model variant whose tiny base to build (sd, sd3, "
                                "glide_mini)."),
    init: Path = typer.Option(None, "--init", help="Base directory to build on. SD: its VAE kept, its denoiser "
                              "trained --steps more (or a new one, with --denoiser); other variants: the model "
                              "their objective trains from (sd3 needs one, with a trained VAE)."),
    denoiser: str = typer.Option(None, "--denoiser", help="SD denoiser size (tiny, small): a new U-Net and text "
                                 "encoder of that size. Default: tiny, or --init's own."),
    latent_downsample: int = typer.Option(None, "--latent-downsample", help="SD from scratch: image side / latent "
                                          "side, 4 (8x8 latent at 32 px, the default) or 2 (16x16)."),
    captions: str = typer.Option("generic", "--captions", help="Caption style to learn from: generic; described "
                                 "(every object with its size and colour); web (relation words drawn at random, "
                                 "so none is taught)."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="Shapes world: mixed (1-3 objects, look-alikes) or pairs "
                              "(two distinct objects, GenEval's position task)."),
) -> None:
    """Pretrain a variant's tiny shapes-world base on captions that teach no relation (SD: VAE, then text encoder
    and U-Net; GLIDE-mini: text transformer and U-Net, in pixel space)."""
    from ..models.registry import UnknownVariant, get_variant
    from ..storage import open_store
    from ..training import pretrain_base, set_deterministic

    with run_errors("pretrain"):
        try:
            prefix = get_variant(variant).tiny_base
        except (UnknownVariant, NotImplementedError) as exc:
            raise ValueError(f"--variant: {exc}") from None
        if prefix is None:
            raise ValueError(f"--variant: variant {variant!r} has no tiny shapes base to pretrain")
        if threads:
            set_deterministic(threads)
        where = pretrain_base(prefix, data_dir, steps=steps, seed=seed, n=n, size=size,
                              vae_steps=vae_steps, batch_size=batch_size, lr=lr, store=open_store(blobs),
                              ema_decay=ema_decay, warmup_steps=warmup_steps, lr_schedule=lr_schedule,
                              variant=variant, init=init, denoiser=denoiser, latent_downsample=latent_downsample,
                              captions=captions, world=world)
    out.print(f"[green]saved[/] tiny {variant} base to {blobs} at {where}")


def sample(
    model: str = typer.Option(..., "--model", help="Diffusers directory, or a blob prefix with --blobs."),
    prompt: list[str] = typer.Option(..., "--prompt", help="Repeat for several prompts."),
    out_file: Path = typer.Option(..., "--out", help="PNG grid to write."),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding --model (e.g. trials/<id>/model)."),
    sampler: SamplerName = typer.Option(None, "--sampler", help="Default: the variant's (SD: ddim; GLIDE-mini: "
                                        "ddpm; SD3: flow-matching Euler, ddpm its stochastic step)."),
    steps: int = typer.Option(None, "--steps", min=1,
                              help="Default: the variant's (SD: 50; GLIDE-mini: 100 respaced; SD3: 28)."),
    guidance: float = typer.Option(None, "--guidance", min=0.0,
                                   help="Classifier-free guidance scale. Default: the variant's "
                                   "(SD: 7.5; GLIDE-mini: 3; SD3: 7)."),
    per_prompt: int = typer.Option(1, "--per-prompt", min=1, help="Images per prompt."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Generate images with DDIM or DDPM and classifier-free guidance; save them as a PNG grid."""

    import torch

    from ..models.common.images import save_grid
    from ..models.loading import load_model
    from ..storage import open_store

    try:
        loaded = load_model(model, store=open_store(blobs) if blobs else None)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"orch sample: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if not loaded.generates:
        err.print(f"orch sample: {model} is a {loaded.kind} ({loaded.variant.name}); it generates no images",
                  markup=False, soft_wrap=True)
        raise typer.Exit(2)
    prompts = [p for p in prompt for _ in range(per_prompt)]
    # What is not given is the variant's own default (each samples as its reference does).
    given = {k: v for k, v in {"sampler": sampler.value if sampler else None, "steps": steps,
                               "guidance_scale": guidance}.items() if v is not None}
    images = loaded.variant.generate(loaded.model, prompts, generator=torch.Generator().manual_seed(seed), **given)
    save_grid(images, out_file, cols=per_prompt if per_prompt > 1 else None)
    how = ", ".join(f"{k} {v}" for k, v in given.items()) or f"{loaded.variant.name}'s default sampling"
    out.print(f"[green]wrote[/] {out_file}: {len(prompts)} image(s), {how}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(pretrain)
    app.command()(sample)
