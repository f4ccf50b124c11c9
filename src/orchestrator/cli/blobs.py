"""`orch blobs`: look into a blob store."""
from __future__ import annotations

from pathlib import Path

import typer

from .common import BLOBS_HELP, err, out

group = typer.Typer(help="Look into a blob store (local or Azure): list keys, fetch an object verified.",
                    no_args_is_help=True)


@group.command("ls")
def blobs_ls(
    prefix: str = typer.Argument("", help="Key prefix, e.g. experiments/<id>/grids/."),
    blobs: str = typer.Option(..., "--blobs", help=BLOBS_HELP),
) -> None:
    """Keys under a prefix, with size and sha256."""
    from ..storage import open_store

    store = open_store(blobs)
    for key in store.list(prefix):
        info = store.info(key)
        out.print(f"{info.size:>12,}  {info.sha256[:12]}  {key}", markup=False, highlight=False)


@group.command("get")
def blobs_get(
    key: str = typer.Argument(..., help="Object key, e.g. experiments/<id>/grids/<trial>-final.png."),
    dest: Path = typer.Argument(..., help="File to write (atomically, after the sha256 check)."),
    blobs: str = typer.Option(..., "--blobs", help=BLOBS_HELP),
) -> None:
    """Copy one object out of the store as a plain file (local objects carry a header: use this,
    not `cp`)."""
    from ..storage import open_store
    from ..storage.base import BlobNotFoundError, StorageError

    try:
        info = open_store(blobs).get_file(key, dest)
    except BlobNotFoundError:
        err.print(f"orch blobs get: no object {key!r} in {blobs}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except StorageError as exc:
        err.print(f"orch blobs get: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"{dest}: {info.size:,} bytes, sha256 {info.sha256}", markup=False, highlight=False, soft_wrap=True)
