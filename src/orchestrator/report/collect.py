"""What a report shows, read from the journal (and which blob keys hold its pictures).

Nothing here draws or writes: `collect` returns plain data that figures.py plots and page.py renders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.journal import EventKind, Journal
from orchestrator.results import ResultsTable, build_table, split_metrics


@dataclass
class Evaluation:
    step: int
    metrics: dict[str, dict[str, float]]  # metric -> {"value", "n", "ci_low", "ci_high", "std"}
    grid: str | None                     # blob key of the sample grid of this evaluation
    sheets: dict[str, str] = field(default_factory=dict)  # DrawBench category -> blob key


@dataclass
class TrialReport:
    trial_id: str
    label: str                            # its swept fields, "lr=0.001 seed=1"
    status: str
    steps: list[int] = field(default_factory=list)  # per-step loss and learning rate, in step order
    loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)  # in step order; step 0 is the base


@dataclass
class ReportData:
    experiment_id: str
    name: str
    status: str
    table: ResultsTable
    trials: list[TrialReport]
    manifest_text: str        # the YAML the experiment was submitted from, or the journaled record
    manifest_source: str      # where that text came from


def _sheets(info: dict[str, Any]) -> dict[str, str]:
    """DrawBench category -> blob key, from an `evaluated` event's info (eval/drawbench.py)."""
    db = (info or {}).get("drawbench") or {}
    keys = db.get("artifacts") or {}
    return {cat: keys[name] for cat, name in (db.get("sheets") or {}).items() if name in keys}


def _step_metrics(journal: Journal, eid: str, tid: str) -> tuple[list[int], list[Any], list[Any]]:
    """The trial's journaled loss and lr per step; a step reported twice (a resumed attempt
    replaying it) keeps its latest value."""
    by_step: dict[int, tuple[Any, Any]] = {}
    for e in journal.events(eid, tid, kinds=[EventKind.STEP_METRICS]):
        p = e.payload
        for s, loss, lr in zip(p.get("steps", []), p.get("loss", []), p.get("lr", [])):
            by_step[int(s)] = (loss, lr)
    steps = sorted(by_step)
    return steps, [by_step[s][0] for s in steps], [by_step[s][1] for s in steps]


def _evaluations(journal: Journal, eid: str, tid: str) -> list[Evaluation]:
    by_step: dict[int, Evaluation] = {}
    for e in journal.events(eid, tid, kinds=[EventKind.EVALUATED]):  # seq order: the latest record wins
        p = e.payload
        step = int(p.get("step", 0))
        by_step[step] = Evaluation(step, split_metrics(p.get("metrics") or {}), p.get("grid"),
                                   _sheets(p.get("info") or {}))
    return [by_step[s] for s in sorted(by_step)]


def _label(fields: dict[str, Any], trial_id: str) -> str:
    from orchestrator.results import format_field

    return " ".join(f"{k.rsplit('.', 1)[-1]}={format_field(v)}" for k, v in fields.items()) or trial_id


def manifest_text(journal: Journal, eid: str, record: str) -> tuple[str, str]:
    """(YAML text, where from): the file the experiment was last submitted or resumed from, when it
    is still there and still this experiment's; else the journaled record as YAML."""
    import json

    import yaml

    events = journal.events(eid, kinds=[EventKind.SUBMITTED, EventKind.RESUMED])
    sources = [e.payload.get("source") for e in events if e.trial_id is None and e.payload.get("source")]
    if sources and Path(sources[-1]).is_file():
        from orchestrator.experiment.plan import plan_sweep

        try:
            if plan_sweep(sources[-1]).experiment_id == eid:
                return Path(sources[-1]).read_text(), sources[-1]
        except Exception:  # noqa: BLE001 - a changed or broken file: fall back to the journal's record
            pass
    return yaml.safe_dump(json.loads(record), sort_keys=False), "the journal's record (the file has changed or gone)"


def collect(journal: Journal, experiment_id: str) -> ReportData:
    """Everything the report shows; UnknownExperiment when the journal has no such experiment."""
    state = journal.experiment_state(experiment_id)
    table = build_table(journal, experiment_id)
    fields = {t: row.fields for row in table.rows for t in row.trials}
    seeds = {tid: (t.config or {}).get("train", {}).get("seed") for tid, t in state.trials.items()}
    trials = []
    for tid, t in state.trials.items():
        label = _label({**fields.get(tid, {}), **({"train.seed": seeds[tid]} if len(set(seeds.values())) > 1
                                                  else {})}, tid)
        steps, loss, lr = _step_metrics(journal, experiment_id, tid)
        trials.append(TrialReport(tid, label, t.status.value, steps, loss, lr,
                                  _evaluations(journal, experiment_id, tid)))
    text, source = manifest_text(journal, experiment_id, state.manifest)
    return ReportData(experiment_id, state.name, state.status.value, table, trials, text, source)
