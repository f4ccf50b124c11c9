"""What `orch status`, `orch results` and the head's read endpoints ask of the journal: plain
data and rendered tables, nothing printed. Also cancel, the one write a reader may make."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.journal import EventKind, ExperimentStatus, IllegalTransition, Journal, TrialStatus, open_journal
from orchestrator.results import (
    build_table,
    failed_trials,
    paired_tests,
    render_csv,
    render_json,
    render_paired,
    render_table,
    select_metrics,
)

from .defaults import default_journal

JournalRef = str | Journal | None  # a URL opened for the call (None: the default), or a journal kept open


@contextmanager
def _opened(journal: JournalRef) -> Iterator[Journal]:
    """A journal kept open (the head's: opening one costs a schema check) as it is; a URL opened
    for this call and closed after."""
    if isinstance(journal, Journal):
        yield journal
    else:
        with open_journal(journal or default_journal(), create=False) as opened:
            yield opened


def status(journal_url: JournalRef = None, experiment_id: str | None = None) -> list[dict[str, Any]]:
    """Experiments (all, or one with its trials) as plain data; the default journal when none is named."""
    with _opened(journal_url) as journal:
        states = ([journal.experiment_state(experiment_id)] if experiment_id else journal.list_experiments())
        leases = {s.experiment_id: journal.lease(s.experiment_id) for s in states}
        tenants = {experiment_id: recorded_tenant(journal, experiment_id)} if experiment_id else {}
    out = []
    for s in states:
        lease = leases[s.experiment_id]
        rec: dict[str, Any] = {"experiment_id": s.experiment_id, "name": s.name, "status": s.status.value,
                               "counts": {k.value: v for k, v in s.counts().items() if v},
                               "updated_at": str(s.updated_at) if s.updated_at else None,
                               "owner": None if lease is None or lease.free() else lease.describe()}
        if experiment_id:
            rec["tenant"] = tenants.get(s.experiment_id)
            rec["trials"] = [{"trial_id": t.trial_id, "status": t.status.value, "attempts": t.attempts,
                              "checkpoint_step": t.last_checkpoint_step, "metrics": t.latest_metrics(),
                              "error": t.last_error} for t in s.trials.values()]
        out.append(rec)
    return out


def recorded_tenant(journal, experiment_id: str) -> dict[str, Any] | None:
    """Whom the experiment runs for (name, priority, quota as submitted), from its latest plan in
    the journal; None when it was not submitted through the head."""
    for e in reversed(journal.events(experiment_id, kinds=[EventKind.SUBMITTED, EventKind.RESUMED])):
        if e.trial_id is None and e.payload.get("plan"):
            return e.payload["plan"].get("tenant")
    return None


def results(journal_url: JournalRef, experiment_id: str, fmt: str = "table", metrics: list[str] | None = None,
            paired: str | None = None) -> str:
    """The results table rendered as 'table', 'json' or 'csv'; `metrics` are glob patterns of the
    metric columns to keep (default: every metric in JSON and CSV, the headline ones in a table).
    `paired` (a swept field) adds paired tests between trials that differ only in it, on the
    metrics `metrics` selects (results/paired.py says which test each metric gets)."""
    renderers = {"table": render_table, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use table, json or csv")
    if paired and fmt == "csv":
        raise ValueError("paired tests print as a table or json, not csv")
    with _opened(journal_url) as journal:
        table = build_table(journal, experiment_id)
        tests = paired_tests(journal, experiment_id, paired, metrics) if paired else None
    if metrics is not None or fmt == "table":
        table = select_metrics(table, metrics)
    text = renderers[fmt](table)
    if tests is None:
        return text
    if fmt == "json":
        return json.dumps({**json.loads(text), "paired": [dataclasses.asdict(t) for t in tests]}, indent=2)
    return text + render_paired(tests)


def failures(journal_url: str, experiment_id: str) -> list[tuple[str, str]]:
    """(trial id, one-line error) of each failed trial: what makes `orch run` / `resume` exit 1.
    The error's whole first line as journaled (the table cuts it shorter), so a storage error
    keeps the store, the cause and the key."""
    with _opened(journal_url) as journal:
        failed = failed_trials(build_table(journal, experiment_id))
        journaled = {t.trial_id: t.last_error for t in journal.experiment_state(experiment_id).trials.values()}
    return [(tid, _first_line(journaled.get(tid)) or error) for tid, error in failed]


def _first_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0] if lines else ""


def export_grids(blobs_uri: str, experiment_id: str, out_dir: Path) -> list[Path]:
    """The experiment's evaluated sample grids (base and every checkpoint judged: same prompts,
    same noise) as plain PNG files under `out_dir/<experiment id>/`, each verified by its sha256."""
    from orchestrator.storage import open_store

    store = open_store(blobs_uri)
    prefix = f"experiments/{experiment_id}/grids/"
    written = []
    for key in store.list(prefix):
        if not key.endswith(".png"):  # kept features (.npz) for paired tests live beside the pictures
            continue
        dest = Path(out_dir) / experiment_id / key[len(prefix):]
        store.get_file(key, dest)
        written.append(dest)
    return written


def cancel(journal_url: JournalRef, experiment_id: str) -> dict[str, int]:
    """Cancel through the journal: a running coordinator sees it within seconds and stops its
    trainers; queued and never-started trials are cancelled here. Returns the trial counts."""
    from orchestrator.experiment.journaling import RunJournal

    with _opened(journal_url) as journal:
        state = journal.experiment_state(experiment_id)
        rj = RunJournal(journal, experiment_id)
        if state.status not in (ExperimentStatus.DONE, ExperimentStatus.CANCELLED):
            rj.experiment(EventKind.CANCELLED, f"/after-{state.last_seq}")
        for t in state.trials.values():
            if t.status in (TrialStatus.PENDING, TrialStatus.QUEUED):
                try:
                    rj.transition(t.trial_id, EventKind.CANCELLED)
                except IllegalTransition:  # the coordinator moved it meanwhile
                    pass
        state = journal.experiment_state(experiment_id)
    return {k.value: v for k, v in state.counts().items() if v}
