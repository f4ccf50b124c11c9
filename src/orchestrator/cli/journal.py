"""`orch journal`: operations on a journal database."""
from __future__ import annotations

import typer

from .common import err, out

group = typer.Typer(help="Operate on a journal database (SQLite file or PostgreSQL).", no_args_is_help=True)


@group.command("migrate")
def journal_migrate(url: str = typer.Argument(..., help="sqlite:///FILE or postgresql://user@host:5432/db")) -> None:
    """Create or upgrade a journal's schema to the newest migration (idempotent)."""
    from ..journal import JournalError, head_revision, open_journal

    try:
        open_journal(url).close()
    except JournalError as exc:
        err.print(f"orch journal migrate: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"journal at schema revision {head_revision()}")
