"""`orch data`: dataset builders (the shapes world, GQA-Captions)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..data.worlds import DEFAULT_WORLD
from .common import TextFormat, emit_json, err, out

group = typer.Typer(help="Build datasets: the shapes world, GQA-Captions, shards.", no_args_is_help=True)


@group.command("shapes")
def data_shapes(
    out_dir: Path = typer.Option(..., "--out", help="Directory to write (created atomically)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", min=0),
    size: int = typer.Option(32, "--size", help="Image side in pixels: 32 or 64."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different dataset already there."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="mixed (1-3 objects) or pairs (two distinct objects)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Generate the shapes world: images, scene graphs, captions, Winoground pairs. Same seed, same bytes."""
    from ..data.shapes import IMAGE_SIZES, write_shapes_dataset

    if size not in IMAGE_SIZES:
        err.print(f"--size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {size}", markup=False)
        raise typer.Exit(2)
    try:
        summary = write_shapes_dataset(out_dir, n=n, seed=seed, size=size, overwrite=overwrite, world=world)
    except (FileExistsError, ValueError) as exc:
        err.print(f"{exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if format is TextFormat.json:
        emit_json(summary)
    else:
        pairs = summary["winoground_examples"]
        out.print(f"[green]wrote[/] {out_dir}: {n} scenes at {size}px (seed {seed}), {pairs} Winoground pairs")


class OnError(str, Enum):
    raise_ = "raise"
    skip = "skip"


@group.command("gqa-captions")
def data_gqa_captions(
    scene_graphs: Path = typer.Option(..., "--scene-graphs", help="GQA *_sceneGraphs.json (streamed)."),
    questions: Path = typer.Option(..., "--questions", help="GQA questions JSON (streamed)."),
    out_uri: str = typer.Option(..., "--out", help="Blob store URI or directory for the shard dataset."),
    images: str = typer.Option(None, "--images", help="GQA images folder or blob URI; every image must exist."),
    question_types: str = typer.Option("relation,position,existence", "--question-types"),
    max_tokens: int = typer.Option(77, "--max-tokens", min=1, help="Text encoder token limit."),
    max_per_image: int = typer.Option(None, "--max-per-image", min=1),
    examples_per_shard: int = typer.Option(4096, "--examples-per-shard", min=1),
    workers: int = typer.Option(1, "--workers", min=1, help="Captioning processes (output identical for any N)."),
    on_error: OnError = typer.Option(OnError.raise_, "--on-error", help="raise, or skip and report malformed records."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a build made from other inputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Build GQA-Captions: focused scene-graph summaries per question, as verified shards. Resumable."""
    from ..data.gqa_captions import build_gqa_captions

    try:
        summary = build_gqa_captions(
            scene_graphs, questions, out_uri,
            question_types=[t.strip() for t in question_types.split(",") if t.strip()],
            max_tokens=max_tokens, max_per_image=max_per_image, examples_per_shard=examples_per_shard,
            images=images, on_error=on_error.value, progress=progress and format is TextFormat.text,
            overwrite=overwrite, workers=workers)
    except (ValueError, FileNotFoundError) as exc:  # DataFormatError and BuildConflictError are ValueErrors
        err.print(f"orch data gqa-captions: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if format is TextFormat.json:
        emit_json(summary)
    else:
        out.print(f"[green]GQA-Captions[/] at {out_uri}: {summary['records']} records in {summary['shards']} shard(s), "
                  f"{summary['skipped']} skipped, {summary['records_per_s']:.0f} records/s")
