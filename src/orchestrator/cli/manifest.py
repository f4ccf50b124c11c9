"""`orch validate` and `orch plan`: a manifest checked, and the trials its sweep expands to."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..manifest import experiment_id
from .common import PlanFormat, TextFormat, emit_json, load_or_exit, out


def validate(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format", help="text or json."),
) -> None:
    """Check a manifest: schema, referenced files, every swept value. Exit 2 lists all problems."""
    loaded, trials = load_or_exit(file, format.value)
    if format is TextFormat.json:
        emit_json({"file": str(file), "valid": True, "errors": [], "trials": len(trials)})
    else:
        out.print(f"[green]valid[/]: {file} ({loaded.manifest.name}, {len(trials)} trial(s))")


def plan(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    format: PlanFormat = typer.Option(PlanFormat.table, "--format", help="table or json."),
) -> None:
    """Show the trials a manifest's sweep expands to, with their stable ids."""
    loaded, trials = load_or_exit(file, "json" if format is PlanFormat.json else "text")
    eid = experiment_id(loaded, trials)
    if format is PlanFormat.json:
        emit_json({
            "experiment_id": eid,
            "name": loaded.manifest.name,
            "trials": [{"id": t.id, "index": t.index, "overrides": t.overrides, "config": t.config} for t in trials],
        })
        return
    swept = list(dict.fromkeys(k for t in trials for k in t.overrides))
    table = Table(title=f"{loaded.manifest.name} · experiment {eid} · {len(trials)} trial(s)")
    table.add_column("#", justify="right")
    table.add_column("trial")
    for key in swept:
        table.add_column(key)
    for t in trials:
        table.add_row(str(t.index), t.id, *(_cell(t.overrides.get(k, "")) for k in swept))
    out.print(table)


def _cell(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(plan)
