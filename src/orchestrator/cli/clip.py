"""`orch clip`: the project's own tiny CLIP."""
from __future__ import annotations

import typer

from .common import out

group = typer.Typer(help="The project's own tiny shapes-world CLIP (for CLIP-R-Precision, fid_clip, Winoground).",
                    no_args_is_help=True)


@group.command("train")
def clip_train(
    out_to: str = typer.Option(..., "--out", help="Directory, or a blob prefix with --blobs."),
    blobs: str = typer.Option(None, "--blobs"),
    steps: int = typer.Option(3000, "--steps", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    data_seed: int = typer.Option(0, "--data-seed", min=0, help="Shapes dataset seed of its training scenes "
                                  "(a second CLIP to judge a model conditioned on the first: another seed and data)."),
    n: int = typer.Option(4000, "--n", min=2, help="Shapes scenes to train on."),
    size: int = typer.Option(32, "--size"),
    batch_size: int = typer.Option(64, "--batch-size", min=2),
    lr: float = typer.Option(2e-3, "--lr", min=0.0),
    threads: int = typer.Option(1, "--threads", min=1),
) -> None:
    """Train the tiny CLIP contrastively on shapes images and captions; saved in transformers' format."""
    import torch

    from ..models.clip import train_tiny_clip
    from ..storage import open_store

    torch.set_num_threads(threads)
    _, result = train_tiny_clip(out_to, steps=steps, seed=seed, n=n, size=size, batch_size=batch_size, lr=lr,
                                data_seed=data_seed, store=open_store(blobs) if blobs else None)
    out.print(f"[green]saved[/] tiny CLIP to {result.saved_to}: contrastive loss {result.first_loss:.3f} -> "
              f"{result.final_loss:.3f} in {result.steps} steps ({result.wall_s:.0f} s)")
