"""The results table rendered: a Rich table for the terminal, plain text as wide as it needs,
JSON with every number, CSV with one column per number.
"""
from __future__ import annotations

import csv
import io
import json
from enum import Enum
from typing import Any

from .table import ResultsTable, Row


class ResultsFormat(str, Enum):
    """How `orch results`, `orch grade results` and the head's results endpoints render a table."""
    table = "table"
    json = "json"
    csv = "csv"


def format_cell(row: Row, column: str) -> str:
    cell = row.cell(column)
    if cell is None:
        return "-"
    mean, std, _ = cell
    if std is not None:
        return f"{mean:.3f} ± {std:.3f}"
    ci = row.interval(column)
    return f"{mean:.3f}" if ci is None else f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def column_header(table: ResultsTable, column: str) -> str:
    """The column name, with the sample count when every row's value rests on the same number."""
    ns = {r.samples(column) for r in table.rows if column in r.values}
    return f"{column} n={ns.pop()}" if len(ns) == 1 and None not in ns else column


def format_field(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def row_status(row: Row) -> str:
    kinds = list(dict.fromkeys(row.statuses))
    return kinds[0] if len(kinds) == 1 else ",".join(f"{row.statuses.count(k)} {k}" for k in kinds)


def to_records(table: ResultsTable) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        rec: dict[str, Any] = dict(row.fields)
        rec["trials"] = row.trials
        rec["status"] = row_status(row)
        rec["errors"] = row.errors
        for col in table.metrics:
            cell = row.cell(col)
            rec[col] = None if cell is None else {"mean": cell[0], "std": cell[1], "n": cell[2],
                                                  "per_trial": row.aux.get(col, [])}
        out.append(rec)
    return out


def render_json(table: ResultsTable) -> str:
    return json.dumps({"experiment_id": table.experiment_id, "name": table.name, "swept": table.swept,
                       "metrics": table.metrics, "rows": to_records(table)}, indent=2)


def render_csv(table: ResultsTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = [*table.swept, "n_trials", "status", "errors"]
    for col in table.metrics:
        header += [f"{col} mean", f"{col} std", f"{col} samples", f"{col} ci_low", f"{col} ci_high"]
    w.writerow(header)
    for row in table.rows:
        line = [format_field(row.fields[k]) for k in table.swept] + [len(row.trials), row_status(row),
                                                                   " | ".join(row.errors)]
        for col in table.metrics:
            cell = row.cell(col)
            if cell is None:
                line += [""] * 5
                continue
            ci, n = row.interval(col), row.samples(col)
            line += [f"{cell[0]:.6g}", "" if cell[1] is None else f"{cell[1]:.6g}", "" if n is None else n,
                     *(("", "") if ci is None else (f"{ci[0]:.6g}", f"{ci[1]:.6g}"))]
        w.writerow(line)
    return buf.getvalue()


def render_rich(table: ResultsTable):
    """A rich.table.Table (the CLI prints it)."""
    from rich.table import Table

    t = Table(title=f"{table.name} · experiment {table.experiment_id}")
    for k in table.swept:  # never wrapped: a wide table stays one line per trial group
        t.add_column(k, no_wrap=True)
    t.add_column("n", justify="right", no_wrap=True)
    t.add_column("status", no_wrap=True)
    for col in table.metrics:
        t.add_column(column_header(table, col), justify="right", no_wrap=True)
    errors = any(row.errors for row in table.rows)
    if errors:
        t.add_column("error", no_wrap=True)
    for row in table.rows:
        t.add_row(*[format_field(row.fields[k]) for k in table.swept], str(len(row.trials)), row_status(row),
                  *[format_cell(row, c) for c in table.metrics], *(["; ".join(row.errors)] if errors else []))
    return t


def render_table(table: ResultsTable, width: int = 1000) -> str:
    """Plain text as wide as the table needs (up to `width`): a pager or a wide terminal shows it
    whole, where cells folded to fit 80 columns would be unreadable."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_rich(table))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
