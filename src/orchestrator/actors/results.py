"""The results table of an experiment, from the journal alone.

Rows are trial groups: trials that differ only in their seed share a row, and each metric is
shown as mean ± std over the seeds (as the seed paper's tables are). Columns are the swept
fields, then each metric at the base (step 0, "before") and at the trial's last evaluation.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from orchestrator.journal import ExperimentState, Journal, TrialStatus

SEED_KEY = "train.seed"


@dataclass
class Row:
    fields: dict[str, Any]
    trials: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # column -> one value per seed

    def cell(self, column: str) -> tuple[float, float | None, int] | None:
        vals = self.values.get(column)
        if not vals:
            return None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


@dataclass
class ResultsTable:
    experiment_id: str
    name: str
    swept: list[str]
    metrics: list[str]
    rows: list[Row]


def _overrides(config: dict, swept_paths: list[str]) -> dict[str, Any]:
    out = {}
    for path in swept_paths:
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[path] = node
    return out


def _swept_paths(state: ExperimentState) -> list[str]:
    """Leaf fields whose value differs between the experiment's trials."""
    def leaves(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: json.dumps(d, sort_keys=True)}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    flat = [leaves(t.config or {}) for t in state.trials.values()]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def build_table(journal: Journal, experiment_id: str) -> ResultsTable:
    state = journal.experiment_state(experiment_id)
    swept = _swept_paths(state)
    group_keys = [k for k in swept if k != SEED_KEY]
    rows: dict[str, Row] = {}
    metric_names: list[str] = []
    for trial in state.trials.values():
        fields = _overrides(trial.config or {}, group_keys)
        row = rows.setdefault(json.dumps(fields, sort_keys=True, default=str), Row(fields))
        row.trials.append(trial.trial_id)
        row.statuses.append(trial.status.value)
        steps = sorted(trial.metrics)
        picks = []
        if 0 in trial.metrics and len(steps) > 1:
            picks.append(("base", trial.metrics[0]))
        if steps and trial.status is TrialStatus.DONE:
            picks.append(("final", trial.metrics[steps[-1]]))
        for when, metrics in picks:
            for name, value in metrics.items():
                col = f"{name} ({when})"
                if col not in metric_names:
                    metric_names.append(col)
                row.values.setdefault(col, []).append(float(value))
        done = [e for e in journal.events(experiment_id, trial.trial_id, kinds=["done"])]
        if done and done[-1].payload.get("final_loss") is not None:
            row.values.setdefault("final_loss", []).append(float(done[-1].payload["final_loss"]))
    metric_names.sort(key=lambda c: (c.split(" (")[0], c.endswith("(final)")))
    if any("final_loss" in r.values for r in rows.values()):
        metric_names.append("final_loss")
    return ResultsTable(experiment_id, state.name, group_keys, metric_names, list(rows.values()))


def _fmt_cell(cell: tuple[float, float | None, int] | None) -> str:
    if cell is None:
        return "-"
    mean, std, _ = cell
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _fmt_field(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def _status(row: Row) -> str:
    kinds = list(dict.fromkeys(row.statuses))
    return kinds[0] if len(kinds) == 1 else ",".join(f"{row.statuses.count(k)} {k}" for k in kinds)


def to_records(table: ResultsTable) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        rec: dict[str, Any] = dict(row.fields)
        rec["trials"] = row.trials
        rec["status"] = _status(row)
        for col in table.metrics:
            cell = row.cell(col)
            rec[col] = None if cell is None else {"mean": cell[0], "std": cell[1], "n": cell[2]}
        out.append(rec)
    return out


def render_json(table: ResultsTable) -> str:
    return json.dumps({"experiment_id": table.experiment_id, "name": table.name, "swept": table.swept,
                       "metrics": table.metrics, "rows": to_records(table)}, indent=2)


def render_csv(table: ResultsTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = [*table.swept, "n_trials", "status"]
    for col in table.metrics:
        header += [f"{col} mean", f"{col} std"]
    w.writerow(header)
    for row in table.rows:
        line = [_fmt_field(row.fields[k]) for k in table.swept] + [len(row.trials), _status(row)]
        for col in table.metrics:
            cell = row.cell(col)
            line += ["", ""] if cell is None else [f"{cell[0]:.6g}", "" if cell[1] is None else f"{cell[1]:.6g}"]
        w.writerow(line)
    return buf.getvalue()


def render_rich(table: ResultsTable):
    """A rich.table.Table (the CLI prints it)."""
    from rich.table import Table

    t = Table(title=f"{table.name} · experiment {table.experiment_id}")
    for k in table.swept:
        t.add_column(k)
    t.add_column("n", justify="right")
    t.add_column("status")
    for col in table.metrics:
        t.add_column(col, justify="right")
    for row in table.rows:
        t.add_row(*[_fmt_field(row.fields[k]) for k in table.swept], str(len(row.trials)), _status(row),
                  *[_fmt_cell(row.cell(c)) for c in table.metrics])
    return t


def render_table(table: ResultsTable, width: int = 160) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_rich(table))
    return console.export_text()
