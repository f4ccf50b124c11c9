"""`orch eval`: evaluation suites on one model, values with their sample counts and intervals."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..data.worlds import DEFAULT_WORLD
from .common import SamplerName, TextFormat, emit_json, err, out


def eval_(
    source: str = typer.Argument(None, help="The model: an exported model directory (its model_index.json names "
                                 "the variant), file:// or az:// URI, or a blob key with --blobs."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="The same as SOURCE, e.g. a blob key "
                                   "(model prefix or trials/<id>/checkpoints/step-N.pt) with --blobs."),
    suite: str = typer.Option(..., "--suite", help="Comma-separated: spatial, clip_r_precision, winoground, fid, "
                              "fid_clip, drawbench, consistency."),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding the checkpoint, caches and tiny base."),
    base: str = typer.Option(None, "--base",
                             help="Base model of a step-N.pt checkpoint (default: the base it records)."),
    samples: int = typer.Option(64, "--samples", min=1),
    seed: int = typer.Option(1234, "--seed", min=0, help="Generation noise and protocol sampling."),
    steps: int = typer.Option(25, "--steps", min=1),
    guidance: float = typer.Option(3.0, "--guidance", min=0.0),
    sampler: SamplerName = typer.Option(SamplerName.ddim, "--sampler"),
    best_of: int = typer.Option(1, "--best-of", min=1,
                                help="Generate K per prompt, keep the CLIP-best (needs --clip)."),
    clip: str = typer.Option(None, "--clip", help="CLIP directory or blob prefix (transformers format)."),
    fid_weights: str = typer.Option(None, "--fid-weights",
                                    help="pt_inception-2015-12-05-6726825d.pth (path or blob key)."),
    fid_reference: str = typer.Option(None, "--fid-reference", help="Reference statistics .npz (mu, sigma)."),
    winoground: str = typer.Option(None, "--winoground", help="Winoground directory (default: shapes-world pairs)."),
    drawbench: str = typer.Option(None, "--drawbench",
                                  help="DrawBench CSV (path or blob key) for the drawbench suite."),
    categories: str = typer.Option(None, "--categories", help="DrawBench categories, comma-separated "
                                   "(default: Counting,Positional, Lin & Srikanth's)."),
    per_prompt: int = typer.Option(4, "--per-prompt", min=1, help="DrawBench images per prompt (paired noise)."),
    reference_scenes: str = typer.Option("prompted", "--reference-scenes", help="FID's real images: prompted (held-out "
                                         "scenes stating a relation) or all (every held-out scene: for a chain)."),
    reference_resamples: int = typer.Option(3, "--reference-resamples", min=0,
                                            help="Bootstrap resamplings of FID's reference."),
    kid_subsets: int = typer.Option(100, "--kid-subsets", min=1),
    oracle_clip: str = typer.Option(None, "--oracle-clip", help="VCDM: the CLIP it is conditioned on; fid/fid_clip "
                                    "also score the oracle arm (images from its embeddings of held-out real images)."),
    consistency_embeddings: int = typer.Option(50, "--consistency-embeddings", min=2),
    consistency_images: int = typer.Option(4, "--consistency-images", min=2,
                                           help="Images per embedding (consistency)."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="Shapes world of the held-out prompts: mixed or pairs."),
    sheets: Path = typer.Option(None, "--sheets", help="Write the DrawBench sheets here as PNG files."),
    journal: str = typer.Option(None, "--journal",
                                help="Record the results in this journal (with --experiment, --trial, --step)."),
    experiment: str = typer.Option(None, "--experiment"),
    trial: str = typer.Option(None, "--trial"),
    step: int = typer.Option(None, "--step", min=0),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Run evaluation suites on a checkpoint; values with sample counts and 95% intervals."""
    from dataclasses import asdict

    from ..eval.inception import FIDWeightsError
    from ..eval.record import record_results
    from ..eval.suites import MetricUnavailable, build_context, run_in_context
    from ..storage import open_store

    if (source is None) == (checkpoint is None):
        err.print("orch eval: name the model once, as SOURCE or --checkpoint", markup=False)
        raise typer.Exit(2)
    checkpoint = checkpoint or source
    if journal and not (experiment and trial and step is not None):
        err.print("orch eval: --journal needs --experiment, --trial and --step to record against", markup=False)
        raise typer.Exit(2)
    try:
        ctx = build_context(checkpoint, store=open_store(blobs) if blobs else None, base=base,
                            samples=samples, seed=seed, steps=steps, guidance_scale=guidance, sampler=sampler.value,
                            best_of=best_of, clip=clip, fid_weights=fid_weights, fid_reference=fid_reference,
                            winoground=winoground, drawbench=drawbench, drawbench_per_prompt=per_prompt,
                            reference_scenes=reference_scenes, reference_resamples=reference_resamples,
                            kid_subsets=kid_subsets, oracle_clip=oracle_clip,
                            consistency_embeddings=consistency_embeddings, consistency_images=consistency_images,
                            world=world,
                            **({"drawbench_categories": tuple(c.strip() for c in categories.split(",") if c.strip())}
                               if categories else {}))
        results = run_in_context(ctx, suite)
    except (MetricUnavailable, FIDWeightsError, FileNotFoundError, ValueError) as exc:
        err.print(f"orch eval: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if sheets is not None:
        for r in results:
            for name, data in r.artifacts.items():
                sheets.mkdir(parents=True, exist_ok=True)
                (sheets / name).write_bytes(data)
    if journal:
        from ..journal import open_journal

        with open_journal(journal) as j:
            stored = record_results(j, experiment, trial, step, results, weights=checkpoint,
                                    options=asdict(ctx.options))
        err.print(f"{'recorded' if stored else 'already recorded (kept the first)'}: evaluation of {checkpoint} "
                  f"for {trial} at step {step} in {journal}", markup=False, soft_wrap=True)
    if format is TextFormat.json:
        emit_json([r.to_json() for r in results])
        return
    table = Table(title=f"eval of {checkpoint}")
    for col in ("suite", "metric", "value", "95% CI", "std", "n"):
        table.add_column(col)
    for r in results:
        for m in r.metrics:
            ci = "" if m.ci_low is None else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
            n = str(m.n) if m.n_reference is None else f"{m.n} vs {m.n_reference} real"
            table.add_row(r.suite, m.name, f"{m.value:.4f}", ci, "" if m.std is None else f"{m.std:.4f}", n)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_)
