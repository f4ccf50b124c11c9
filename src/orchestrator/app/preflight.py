"""Before a run or submission starts: its journal and blob store checked, its lease claimed."""
from __future__ import annotations

from orchestrator.experiment.plan import SweepPlan
from orchestrator.journal import open_journal
from orchestrator.journal.ownership import Ownership, claim

from .progress import print_line


def preflight(plan: SweepPlan, journal_url: str | None = None) -> None:
    """The journal and the blob store, checked before Ray starts or anything is written: each
    problem one line naming the location (bad input exit 2, unreachable or full exit 1)."""
    check_blobs(plan)
    open_journal(journal_url or plan.journal_url).close()


def check_blobs(plan: SweepPlan) -> None:
    """The blob store half of `preflight` (the head's API has its journal open already)."""
    from orchestrator.storage.location import check_blob_store

    # Temp files of puts killed with an earlier run go now (stale and unlocked ones only: a
    # concurrent run's uploads are safe, see LocalBlobStore.sweep_orphans).
    check_blob_store(plan.blobs_uri).sweep_orphans()


def claim_experiment(plan: SweepPlan, journal_url: str | None, wait: bool) -> Ownership:
    """The experiment's lease for this driver (LeaseHeld when another live run has it; with
    `wait`, once that run is over)."""
    def on_wait(lease) -> None:  # said whatever the progress setting: the wait may be long
        print_line(f"experiment {plan.experiment_id} is being run by {lease.describe()}; waiting for it to end")

    return claim(journal_url or plan.journal_url, plan.experiment_id, wait=wait, on_wait=on_wait)
