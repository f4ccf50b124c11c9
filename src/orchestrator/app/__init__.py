"""The application layer: what `orch` and the head's HTTP API do with an experiment, as plain
functions over the journal, the blob store and the Ray actors (reached only through
actors/launch.py: nothing here imports Ray).

    run.py        run_experiment, run_plan, resume: an embedded Ray run with progress and preemption
    submission.py submit, submit_plan: a detached coordinator on a running cluster
    base.py       ensure_base: pretrain a missing tiny base before the trials start
    preflight.py  the journal and blob store checked, the experiment's lease claimed
    queries.py    status, results, failures, export_grids, cancel: read (and cancel) from the journal
    backend.py    Backend: submit/status/results/cancel, local (journal) or over HTTP (api.client.Head)
    progress.py   live progress bars and notices on the terminal
    signals.py    SIGTERM / SIGINT as a clean preemption (Preempted)
    grading.py    human evaluation: build a grading task from experiments, tally its grades
    defaults.py   the default journal

    eid = run_experiment("examples/shapes-demo/manifest.yaml") # embedded Ray, blocks, shows progress
    print(results("sqlite:///runs/journal.db", eid, "table"))

The names below are imported on first use: the journal's SQL stack is slow to import, and
`orch --help` or `orch validate` need none of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.lazy import lazy_exports

# name -> the module that defines it
_EXPORTS = {
    "NAMESPACE": "orchestrator.actors.launch",
    "Backend": ".backend", "LocalBackend": ".backend", "SubmitOutcome": ".backend",
    "ensure_base": ".base",
    "default_journal": ".defaults",
    "cancel": ".queries", "export_grids": ".queries", "failures": ".queries", "results": ".queries",
    "status": ".queries",
    "MetricsOptions": ".run", "resume": ".run", "run_experiment": ".run", "run_plan": ".run",
    "Preempted": ".signals",
    "submit": ".submission", "submit_plan": ".submission",
}
__all__ = ["NAMESPACE", "Backend", "LocalBackend", "MetricsOptions", "Preempted", "SubmitOutcome", "cancel",
           "default_journal", "ensure_base", "export_grids", "failures", "resume", "results", "run_experiment",
           "run_plan", "status", "submit", "submit_plan"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from orchestrator.actors.launch import NAMESPACE

    from .backend import Backend, LocalBackend, SubmitOutcome
    from .base import ensure_base
    from .defaults import default_journal
    from .queries import cancel, export_grids, failures, results, status
    from .run import MetricsOptions, resume, run_experiment, run_plan
    from .signals import Preempted
    from .submission import submit, submit_plan
