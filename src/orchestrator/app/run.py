"""`orch run` and `orch resume`: a sweep run to the end on an embedded local Ray (or resumed on a
cluster), with live progress, Prometheus metrics served from the driver, and SIGTERM / SIGINT
turned into a clean preemption.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from orchestrator.actors import launch
from orchestrator.experiment.plan import SweepPlan, plan_sweep, recorded_plan
from orchestrator.journal import LeaseLost, open_journal
from orchestrator.journal.ownership import Ownership, kept

from .base import ensure_base
from .preflight import claim_experiment, preflight
from .progress import print_line, print_notice, show_progress
from .signals import Preempted, Preemption

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MetricsOptions:
    port: int = 9464               # 0: any free port
    sd_file: str | None = None     # a Prometheus file_sd file that lists the endpoint while the run lasts


def run_experiment(manifest_path: str | Path, *, progress: bool = True, num_cpus: int | None = None,
                   journal_url: str | None = None, retry_failed: bool = False, restart_missing: bool = False,
                   grace_s: float = 30.0, metrics: MetricsOptions | None = None, wait: bool = False) -> str:
    """Run a sweep to the end on an embedded local Ray; returns the experiment id.

    Finished trials in the journal are not run again; unfinished ones resume from their checkpoints.
    SIGTERM / SIGINT preempt: running trainers checkpoint at their next step boundary (within
    `grace_s`), Ray shuts down cleanly, and Preempted is raised for the caller's exit code.
    `metrics` serves the run's Prometheus metrics from this process while it runs. Another live
    run of the same experiment holds its lease: LeaseHeld, nothing done (`wait`: run after it).
    """
    return run_plan(plan_sweep(manifest_path), progress=progress, num_cpus=num_cpus, journal_url=journal_url,
                    retry_failed=retry_failed, restart_missing=restart_missing, grace_s=grace_s, metrics=metrics,
                    wait=wait)


def run_plan(plan: SweepPlan, *, progress: bool = True, num_cpus: int | None = None,
             journal_url: str | None = None, retry_failed: bool = False, restart_missing: bool = False,
             grace_s: float = 30.0, metrics: MetricsOptions | None = None, wait: bool = False) -> str:
    """`run_experiment` of a plan already checked (read from a file, or back from a journal)."""
    preflight(plan, journal_url)
    own = claim_experiment(plan, journal_url, wait)
    with kept(own) as keeper:
        ensure_base(plan, progress=progress)
        return _serve_and_run(plan, progress, num_cpus, journal_url, retry_failed, restart_missing, grace_s,
                              metrics, own, keeper)


def resume(journal_url: str, experiment_id: str, *, progress: bool = True, address: str | None = None,
           num_cpus: int | None = None, restart_missing: bool = False, grace_s: float = 30.0,
           metrics: MetricsOptions | None = None, wait: bool = False) -> str:
    """Finish an interrupted or cancelled experiment from its journal; failed trials are retried."""
    with open_journal(journal_url, create=False) as journal:  # the plan as journaled, not the file
        plan = recorded_plan(journal, experiment_id, journal_url, on_fallback=print_line)
    if address:
        own = claim_experiment(plan, journal_url, wait)
        with kept(own, release=False):  # released by the coordinator when the sweep ends
            launch.start_detached(plan, journal_url, address, own, retry_failed=True,
                                  restart_missing=restart_missing)
        return experiment_id
    return run_plan(plan, progress=progress, num_cpus=num_cpus, journal_url=journal_url,
                    retry_failed=True, restart_missing=restart_missing, grace_s=grace_s, metrics=metrics,
                    wait=wait)


def _serve_and_run(plan: SweepPlan, progress: bool, num_cpus: int | None, journal_url: str | None,
                   retry_failed: bool, restart_missing: bool, grace_s: float, metrics: MetricsOptions | None,
                   own: Ownership, keeper) -> str:
    args = (plan, progress, num_cpus, journal_url, retry_failed, restart_missing, grace_s)
    if metrics is None:
        return _run_embedded(*args, None, own, keeper)
    from orchestrator.telemetry.exporter import EmbeddedMetrics

    with EmbeddedMetrics(metrics.port, metrics.sd_file) as served:  # before Ray: its workers inherit the setting
        if served.note:
            log.warning("%s", served.note)
            if progress:
                print_line(served.note)
        try:
            return _run_embedded(*args, served, own, keeper)
        finally:
            served.finish()


def _run_embedded(plan: SweepPlan, progress: bool, num_cpus: int | None, journal_url: str | None,
                  retry_failed: bool, restart_missing: bool, grace_s: float, served, own: Ownership,
                  keeper) -> str:
    clean, lost, unavailable = True, None, None
    with launch.local_ray(num_cpus):
        sweep = launch.start_sweep(plan, journal_url, own, retry_failed=retry_failed,
                                   restart_missing=restart_missing)
        with Preemption(grace_s) as stop:
            shown = show_progress(sweep, plan, stop, keeper) if progress else 0
            while not sweep.finished(timeout=0.5):
                if keeper.lost:  # another run took the experiment over: stop writing, now
                    break
                if stop.tick(sweep):
                    clean = False
                    break
        if keeper.lost:
            lost = keeper.lost
        elif clean:
            outcome = sweep.outcome()
            lost, unavailable = outcome.get("lease_lost"), outcome.get("journal_unavailable")
        if served is not None:
            served.mark_done()
        for notice in sweep.notices(shown):  # on the console, not only in Ray's logs
            print_notice(notice)
        sweep.kill()
    if lost:
        raise LeaseLost(lost)
    if unavailable:  # the journal could not record the run: exit 1 with its one line, not a results table
        from orchestrator.journal.retry import JournalUnavailable
        raise JournalUnavailable(unavailable)
    if stop.signum is not None:
        raise Preempted(stop.signum, plan.experiment_id, clean)
    return plan.experiment_id
