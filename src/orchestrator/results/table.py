"""The results table of an experiment, built from the journal alone.

Rows are trial groups: trials that differ only in their seed share a row, and each metric is
shown as mean ± std over the seeds (as Lin & Srikanth's tables are); a row of one trial shows the
metric's own 95% interval instead. Columns are the swept fields, then each metric at the base
(step 0, "before") and at the trial's last evaluation; a column whose values all come from the
same number of samples says so in its header (render.py draws it; JSON and CSV carry every
number: sample counts, intervals, the spread over the protocol's chunks).
"""
from __future__ import annotations

import fnmatch
import json
import statistics
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the journal (and its SQL stack) is imported where a table is built, not here
    from orchestrator.journal import ExperimentState, Journal

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


def field_values(config: dict, paths: list[str]) -> dict[str, Any]:
    """The trial config's value at each dotted path (None where it has none)."""
    out = {}
    for path in paths:
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[path] = node
    return out


def swept_paths(state: ExperimentState) -> list[str]:
    """Leaf fields whose value differs between the experiment's trials. A variant's own options
    (`model.<variant>.*`) are compared among that variant's trials only: in a sweep over variants
    (sd and sd3) the sd trials' `model.sd.*` is not "swept" because sd3 trials have none."""
    def leaves(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: json.dumps(d, sort_keys=True)}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    configs = [t.config or {} for t in state.trials.values()]
    flat = [leaves(c) for c in configs]
    variant_of = [(c.get("model") or {}).get("variant") for c in configs]
    variants = set(variant_of) - {None}
    keys = list(dict.fromkeys(k for f in flat for k in f))

    def applies(key: str, variant: str | None) -> bool:
        parts = key.split(".")
        return not (len(parts) >= 2 and parts[0] == "model" and parts[1] in variants and parts[1] != variant)

    return [k for k in keys if len({f.get(k) for f, v in zip(flat, variant_of) if applies(k, v)}) > 1]


def build_table(journal: Journal, experiment_id: str) -> ResultsTable:
    from orchestrator.journal import TrialStatus

    state = journal.experiment_state(experiment_id)
    swept = swept_paths(state)
    group_keys = [k for k in swept if k != SEED_KEY]
    rows: dict[str, Row] = {}
    metric_names: list[str] = []
    for trial in state.trials.values():
        fields = field_values(trial.config or {}, group_keys)
        row = rows.setdefault(json.dumps(fields, sort_keys=True, default=str), Row(fields))
        row.trials.append(trial.trial_id)
        ends = journal.events(experiment_id, trial.trial_id, kinds=["evaluating", "done", "stopped"])
        stops = [e for e in ends if e.kind.value == "stopped"]
        # an early-stopped trial: the rung it was stopped at (its `stopped` event's)
        rung = int(stops[-1].payload["step"]) if trial.status is TrialStatus.STOPPED and stops else None
        row.statuses.append(f"stopped@{rung}" if rung is not None else trial.status.value)
        if trial.status is TrialStatus.FAILED:
            row.errors.append(one_line(trial.last_error or "failed (no error journaled)"))
        steps = sorted(trial.metrics)
        picks = []
        if 0 in trial.metrics and len(steps) > 1:
            picks.append(("base", trial.metrics[0]))
        if steps and trial.status is TrialStatus.DONE:
            picks.append(("final", trial.metrics[steps[-1]]))
        elif rung in trial.metrics:  # what the early-stopping decision judged
            picks.append(("stopped", trial.metrics[rung]))
        for when, metrics in picks:
            for name, parts in split_metrics(metrics).items():
                col = f"{name} ({when})"
                if col not in metric_names:
                    metric_names.append(col)
                if parts.get("n") == 0:  # e.g. conditional accuracy with no image holding both objects:
                    continue             # no value at all, not a 0 to average in
                row.values.setdefault(col, []).append(float(parts["value"]))
                row.aux.setdefault(col, []).append({k: v for k, v in parts.items() if k != "value"})
        loss = final_loss(ends)
        if loss is not None:
            row.values.setdefault("final_loss", []).append(float(loss))
    metric_names.sort(key=lambda c: (c.split(" (")[0], c.endswith("(final)"), c.endswith("(stopped)")))
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
    from orchestrator.journal import TrialStatus

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
