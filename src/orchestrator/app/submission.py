"""`orch submit --address`: a sweep handed to a running Ray cluster under a detached coordinator,
returning at once (the head's HTTP API submits through `submit_plan` too)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.actors import launch
from orchestrator.experiment.plan import SweepPlan, plan_sweep
from orchestrator.journal.ownership import kept

from .base import ensure_base
from .preflight import claim_experiment, preflight


def submit(manifest_path: str | Path, address: str, *, journal_url: str | None = None) -> str:
    """Start a sweep on a running cluster under a detached coordinator; returns at once with its id.

    The plan travels by value: the cluster's nodes never read the manifest file. They must reach
    the manifest's storage (Azure blobs, a PostgreSQL journal) and its datasets and model paths."""
    return submit_plan(plan_sweep(manifest_path), address, journal_url=journal_url)


def submit_plan(plan: SweepPlan, address: str, *, journal_url: str | None = None) -> str:
    """`submit` of a manifest already loaded and planned (the head's HTTP API plans it once to
    validate it). `journal_url` overrides the manifest's journal everywhere, preflight included."""
    preflight(plan, journal_url)
    own = claim_experiment(plan, journal_url, wait=False)
    with kept(own, release=False):  # released by the coordinator when the sweep ends
        ensure_base(plan)
        launch.start_detached(plan, journal_url, address, own)
    return plan.experiment_id
