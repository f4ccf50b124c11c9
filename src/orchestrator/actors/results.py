"""The results table of an experiment, from the journal alone.

Rows are trial groups: trials that differ only in their seed share a row, and each metric is
shown as mean ± std over the seeds (as Lin & Srikanth's tables are); a row of one trial shows the
metric's own 95% interval instead. Columns are the swept fields, then each metric at the base
(step 0, "before") and at the trial's last evaluation; a column whose values all come from the
same number of samples says so in its header. JSON and CSV carry every number: sample counts,
intervals, the spread over the protocol's chunks.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import json
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.journal import ExperimentState, Journal, TrialStatus

SEED_KEY = "train.seed"
# What the suites store beside each value in an `evaluated` event (orchestrator.eval.suites.flatten_metrics).
AUX = ("n", "ci_low", "ci_high", "std", "n_reference")


def split_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"spatial.accuracy": v, "spatial.accuracy.n": 100, ...} -> {"spatial.accuracy": {"value": v, "n": 100, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        head, _, tail = key.rpartition(".")
        if tail not in AUX or head not in metrics:
            out.setdefault(key, {})["value"] = value
    for key, value in metrics.items():
        head, _, tail = key.rpartition(".")
        if tail in AUX and head in out:
            out[head][tail] = value
    return out


@dataclass
class Row:
    fields: dict[str, Any]
    trials: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # column -> one value per seed
    aux: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # column -> n, CI, std per seed
    errors: list[str] = field(default_factory=list)  # each failed trial's journaled error, one line

    def cell(self, column: str) -> tuple[float, float | None, int] | None:
        vals = self.values.get(column)
        if not vals:
            return None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)

    def samples(self, column: str) -> int | None:
        """Samples behind each seed's value, where every seed used the same number."""
        ns = {a.get("n") for a in self.aux.get(column, [])}
        return int(ns.pop()) if len(ns) == 1 and None not in ns else None

    def interval(self, column: str) -> tuple[float, float] | None:
        """The value's own 95% interval, for a row of one trial."""
        aux = self.aux.get(column, [])
        if len(aux) == 1 and "ci_low" in aux[0] and "ci_high" in aux[0]:
            return aux[0]["ci_low"], aux[0]["ci_high"]
        return None


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
        if trial.status is TrialStatus.FAILED:
            row.errors.append(one_line(trial.last_error or "failed (no error journaled)"))
        steps = sorted(trial.metrics)
        picks = []
        if 0 in trial.metrics and len(steps) > 1:
            picks.append(("base", trial.metrics[0]))
        if steps and trial.status is TrialStatus.DONE:
            picks.append(("final", trial.metrics[steps[-1]]))
        for when, metrics in picks:
            for name, parts in split_metrics(metrics).items():
                col = f"{name} ({when})"
                if col not in metric_names:
                    metric_names.append(col)
                if parts.get("n") == 0:  # e.g. conditional accuracy with no image holding both objects:
                    continue             # no value at all, not a 0 to average in
                row.values.setdefault(col, []).append(float(parts["value"]))
                row.aux.setdefault(col, []).append({k: v for k, v in parts.items() if k != "value"})
        loss = final_loss(journal.events(experiment_id, trial.trial_id, kinds=["evaluating", "done"]))
        if loss is not None:
            row.values.setdefault("final_loss", []).append(float(loss))
    metric_names.sort(key=lambda c: (c.split(" (")[0], c.endswith("(final)")))
    if any("final_loss" in r.values for r in rows.values()):
        metric_names.append("final_loss")
    return ResultsTable(experiment_id, state.name, group_keys, metric_names, list(rows.values()))


def final_loss(events: list) -> float | None:
    """A finished trial's final loss: its `done` event's, else (a `done` journaled without it) the
    training summary its `evaluating` event journaled when training ended; None before `done`."""
    done = [e for e in events if e.kind.value == "done"]
    if not done:
        return None
    if done[-1].payload.get("final_loss") is not None:
        return done[-1].payload["final_loss"]
    summaries = [e for e in events if e.kind.value == "evaluating" and e.payload.get("final_loss") is not None]
    return summaries[-1].payload["final_loss"] if summaries else None


def one_line(text: str, limit: int = 160) -> str:
    """A journaled error as one line: its first line (the exception and message), cut at `limit`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 1] + "…"


def failed_trials(table: ResultsTable) -> list[tuple[str, str]]:
    """(trial id, error) of every failed trial, in table order."""
    out = []
    for row in table.rows:
        failed = [t for t, s in zip(row.trials, row.statuses) if s == TrialStatus.FAILED.value]
        out += list(zip(failed, row.errors))
    return out


def metric_of(column: str) -> str:
    """'spatial.accuracy (final)' -> 'spatial.accuracy'."""
    return column.rsplit(" (", 1)[0]


def select_metrics(table: ResultsTable, patterns: list[str] | None) -> ResultsTable:
    """Keep the metric columns whose name matches one of the glob patterns ('spatial.*', 'fid').
    None: the headline columns, without per-tag breakdowns ('winoground.group/Relation'), which
    stay in JSON and CSV; a pattern that matches nothing is an error, not an empty table."""
    if patterns is None:
        return replace(table, metrics=[c for c in table.metrics if "/" not in metric_of(c)])
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(metric_of(c), p) for c in table.metrics)]
    if unmatched:
        names = sorted({metric_of(c) for c in table.metrics})
        raise ValueError(f"no metric matches {', '.join(unmatched)}; metrics: {', '.join(names) or 'none yet'}")
    return replace(table, metrics=[c for c in table.metrics if any(fnmatch.fnmatchcase(metric_of(c), p)
                                                                       for p in patterns)])


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


# ---------------------------------------------------------------- paired tests between trials

PAIRED_METRICS = {"spatial.accuracy": ("spatial", "accuracy"),
                  "spatial.object_accuracy": ("spatial", "object_accuracy")}


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test between two trials that differ only in `field`, judged on the same
    prompts with the same noise (the Evaluator's paired protocol)."""
    fields: dict[str, Any]   # what the two trials share (the other swept fields, the seed)
    field: str
    a: Any
    b: Any
    metric: str
    a_correct: int
    b_correct: int
    n: int
    only_a: int
    only_b: int
    p_value: float


def _final_outcomes(journal: Journal, experiment_id: str, trial_id: str) -> dict[str, str] | None:
    events = [e for e in journal.events(experiment_id, trial_id, kinds=["evaluated"]) if e.payload.get("step")]
    if not events:
        return None
    last = max(events, key=lambda e: (e.payload["step"], e.seq or 0))
    return ((last.payload.get("info") or {}).get("spatial") or {}).get("outcomes")


def paired_tests(journal: Journal, experiment_id: str, field: str) -> list[PairedTest]:
    """Every pair of finished trials whose configs differ only in `field`, tested on each metric of
    PAIRED_METRICS at their final evaluation."""
    from itertools import combinations

    from orchestrator.eval.spatial import mcnemar

    state = journal.experiment_state(experiment_id)
    swept = _swept_paths(state)
    if field not in swept:
        raise ValueError(f"{field} is not swept in experiment {experiment_id}; swept: {', '.join(swept) or 'nothing'}")
    others = [k for k in swept if k != field]
    groups: dict[str, list[tuple[Any, str]]] = {}
    for trial in state.trials.values():
        if trial.status is not TrialStatus.DONE:
            continue
        config = trial.config or {}
        key = json.dumps(_overrides(config, others), sort_keys=True, default=str)
        groups.setdefault(key, []).append((_overrides(config, [field])[field], trial.trial_id))
    tests = []
    for key, members in groups.items():
        for (va, ta), (vb, tb) in combinations(members, 2):
            oa, ob = _final_outcomes(journal, experiment_id, ta), _final_outcomes(journal, experiment_id, tb)
            if not oa or not ob:
                raise ValueError(f"trials {ta} and {tb} have no per-prompt spatial outcomes to pair "
                                 f"(the spatial suite records them)")
            for metric, (_, name) in PAIRED_METRICS.items():
                a = [c == "1" for c in oa[name]]
                b = [c == "1" for c in ob[name]]
                if len(a) != len(b):
                    raise ValueError(f"{ta} and {tb} were judged on {len(a)} and {len(b)} prompts: not paired")
                m = mcnemar(a, b)
                tests.append(PairedTest(json.loads(key), field, va, vb, metric, sum(a), sum(b), len(a),
                                        m["only_a"], m["only_b"], m["p_value"]))
    if not tests:
        raise ValueError(f"no two finished trials of {experiment_id} differ only in {field}")
    return tests


def render_paired(tests: list[PairedTest], width: int = 1000) -> str:
    from rich.console import Console
    from rich.table import Table

    field = tests[0].field
    t = Table(title=f"paired: {field} (same prompts and noise; McNemar exact test, two-sided)")
    shared = list(tests[0].fields)
    for k in shared:
        t.add_column(k, no_wrap=True)
    for col in ("metric", "a", "b", "a correct", "b correct", "only a", "only b", "p"):
        t.add_column(col, no_wrap=True, justify="left" if col in ("metric", "a", "b") else "right")
    for x in tests:
        t.add_row(*[format_field(x.fields[k]) for k in shared], x.metric, format_field(x.a), format_field(x.b),
                  f"{x.a_correct}/{x.n}", f"{x.b_correct}/{x.n}", str(x.only_a), str(x.only_b), f"{x.p_value:.3g}")
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(t)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
