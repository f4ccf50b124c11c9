"""`orch submit --address`: a sweep handed to a running Ray cluster under a detached coordinator,
returning at once (the head's HTTP API claims the lease itself, then calls `start_claimed`)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.actors import launch
from orchestrator.experiment.plan import SweepPlan, plan_sweep
from orchestrator.journal.ownership import Ownership, kept

from .base import ensure_base
from .preflight import claim_experiment, preflight


def submit(manifest_path: str | Path, address: str, *, journal_url: str | None = None) -> str:
    """Start a sweep on a running cluster under a detached coordinator; returns at once with its id.

    The plan travels by value: the cluster's nodes never read the manifest file. They must reach
    the manifest's storage (Azure blobs, a PostgreSQL journal) and its datasets and model paths."""
    return submit_plan(plan_sweep(manifest_path), address, journal_url=journal_url)


def submit_plan(plan: SweepPlan, address: str, *, journal_url: str | None = None) -> str:
    """`submit` of a manifest already loaded and planned. `journal_url` overrides the manifest's
    journal everywhere, preflight included."""
    preflight(plan, journal_url)
    start_claimed(plan, address, journal_url, claim_experiment(plan, journal_url, wait=False))
    return plan.experiment_id


def start_claimed(plan: SweepPlan, address: str, journal_url: str | None, own: Ownership) -> None:
    """The second half of `submit_plan`, once its lease is claimed: the tiny base made (minutes,
    the first time), the detached coordinator started with the lease handed over. The head's
    HTTP API claims while it answers and runs this in the background (api/submissions.py)."""
    with kept(own, release=False):  # released by the coordinator when the sweep ends
        ensure_base(plan)
        launch.start_detached(plan, journal_url, address, own)
