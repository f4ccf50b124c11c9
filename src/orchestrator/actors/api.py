"""What the CLI calls: run, submit, status, results, cancel, resume. Plain functions, no printing
except the live progress of `run_experiment`.

    eid = run_experiment("examples/shapes-demo.yaml")          # embedded Ray, blocks, shows progress
    print(results("sqlite:///runs/journal.db", eid, "table"))
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.journal import EventKind, ExperimentStatus, IllegalTransition, TrialStatus, open_journal

from .plan import SweepPlan, plan_sweep
from .results import build_table, render_csv, render_json, render_table

log = logging.getLogger(__name__)
NAMESPACE = "orch"
DEFAULT_JOURNAL = os.environ.get("ORCH_JOURNAL", "sqlite:///runs/journal.db")


@dataclass(frozen=True)
class PretrainSettings:
    """The tiny base's pretraining when a manifest's model.base is null and none is cached."""
    steps: int = int(os.environ.get("ORCH_PRETRAIN_STEPS", 3000))
    vae_steps: int = int(os.environ.get("ORCH_PRETRAIN_VAE_STEPS", 1000))
    lr: float = 5e-4
    batch_size: int = 32


def ensure_base(plan: SweepPlan, settings: PretrainSettings = PretrainSettings(), num_threads: int | None = None) -> bool:
    """Pretrain and cache the tiny base in the blob store if the manifest needs it; True if built now."""
    from orchestrator.storage import open_store
    from orchestrator.training import TINY_BASE_PREFIX, pretrain_base, set_deterministic

    m = plan.loaded.manifest
    store = open_store(plan.blobs_uri)
    if m.model.base is not None or store.exists(f"{TINY_BASE_PREFIX}/model_index.json"):
        return False
    src = m.data.train
    set_deterministic(num_threads or os.cpu_count())
    log.info("pretraining the tiny base (%d steps) into %s", settings.steps, plan.blobs_uri)
    pretrain_base(TINY_BASE_PREFIX, None, steps=settings.steps, seed=src.seed if src else 0,
                  n=src.n if src and src.n else 2000, size=m.model.resolution, vae_steps=settings.vae_steps,
                  batch_size=settings.batch_size, lr=settings.lr, store=store)
    return True


def _coordinator(plan: SweepPlan, journal_url: str | None, retry_failed: bool, detached: bool):
    from .coordinator import ExperimentCoordinator

    opts: dict[str, Any] = {"name": f"coordinator-{plan.experiment_id}", "namespace": NAMESPACE,
                            "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    return ExperimentCoordinator.options(**opts).remote(str(plan.manifest_path), journal_url,
                                                        retry_failed=retry_failed)


def run_experiment(manifest_path: str | Path, *, progress: bool = True, num_cpus: int | None = None,
                   journal_url: str | None = None, retry_failed: bool = False,
                   pretrain: PretrainSettings | None = None) -> str:
    """Run a sweep to the end on an embedded local Ray; returns the experiment id.

    Finished trials in the journal are not run again; unfinished ones resume from their checkpoints.
    """
    import ray

    from .cluster import shutdown, start_local

    plan = plan_sweep(manifest_path)
    ensure_base(plan, pretrain or PretrainSettings())
    info = start_local(num_cpus=num_cpus)
    try:
        coord = _coordinator(plan, journal_url, retry_failed, detached=False)
        done_ref = coord.run.remote()
        if progress:
            _show_progress(coord, done_ref, plan)
        ray.get(done_ref)
        ray.kill(coord)
    finally:
        shutdown(info)
    return plan.experiment_id


def _show_progress(coord, done_ref, plan: SweepPlan) -> None:
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {t.id: t.label for t in plan.trials}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn()) as bar:
        tasks = {t.id: bar.add_task(f"{t.id} {labels[t.id]}", total=t.manifest.train.steps, status="queued",
                                    loss="-") for t in plan.trials}
        while True:
            ready, _ = ray.wait([done_ref], timeout=0.5)
            for tid, p in ray.get(coord.progress.remote()).items():
                loss = p.get("loss")
                bar.update(tasks[tid], completed=p.get("step", 0), status=p.get("status", ""),
                           loss="-" if loss is None else f"{loss:.4f}")
            if ready:
                return


def submit(manifest_path: str | Path, address: str, *, journal_url: str | None = None) -> str:
    """Start a sweep on a running cluster under a detached coordinator; returns at once with its id.

    The cluster's workers must see the manifest path and the manifest's storage (a shared disk,
    Azure blobs, PostgreSQL journal)."""
    from .cluster import connect

    plan = plan_sweep(manifest_path)
    ensure_base(plan)
    connect(address)
    coord = _coordinator(plan, journal_url, retry_failed=False, detached=True)
    coord.run.remote()
    time.sleep(0.5)  # let the call leave this process before it exits
    return plan.experiment_id


def status(journal_url: str = DEFAULT_JOURNAL, experiment_id: str | None = None) -> list[dict[str, Any]]:
    """Experiments (all, or one with its trials) as plain data."""
    with open_journal(journal_url) as journal:
        states = ([journal.experiment_state(experiment_id)] if experiment_id else journal.list_experiments())
    out = []
    for s in states:
        rec: dict[str, Any] = {"experiment_id": s.experiment_id, "name": s.name, "status": s.status.value,
                               "counts": {k.value: v for k, v in s.counts().items() if v},
                               "updated_at": str(s.updated_at) if s.updated_at else None}
        if experiment_id:
            rec["trials"] = [{"trial_id": t.trial_id, "status": t.status.value, "attempts": t.attempts,
                              "checkpoint_step": t.last_checkpoint_step, "metrics": t.latest_metrics(),
                              "error": t.last_error} for t in s.trials.values()]
        out.append(rec)
    return out


def results(journal_url: str, experiment_id: str, fmt: str = "table") -> str:
    """The results table rendered as 'table', 'json' or 'csv'."""
    renderers = {"table": render_table, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use table, json or csv")
    with open_journal(journal_url) as journal:
        return renderers[fmt](build_table(journal, experiment_id))


def cancel(journal_url: str, experiment_id: str) -> dict[str, int]:
    """Cancel through the journal: a running coordinator sees it within seconds and stops its
    trainers; queued and never-started trials are cancelled here. Returns the trial counts."""
    from .journaling import RunJournal

    with open_journal(journal_url) as journal:
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


def manifest_source(journal_url: str, experiment_id: str) -> str:
    """The manifest path the experiment was last submitted or resumed from."""
    with open_journal(journal_url) as journal:
        journal.experiment_state(experiment_id)  # UnknownExperiment if absent
        events = journal.events(experiment_id, kinds=[EventKind.SUBMITTED, EventKind.RESUMED])
    sources = [e.payload.get("source") for e in events if e.trial_id is None and e.payload.get("source")]
    if not sources:
        raise LookupError(f"experiment {experiment_id} records no manifest path to resume from")
    return sources[-1]


def resume(journal_url: str, experiment_id: str, *, progress: bool = True, address: str | None = None,
           num_cpus: int | None = None) -> str:
    """Finish an interrupted or cancelled experiment from its journal; failed trials are retried."""
    source = manifest_source(journal_url, experiment_id)
    plan = plan_sweep(source)
    if plan.experiment_id != experiment_id:
        raise ValueError(f"{source} now describes experiment {plan.experiment_id}, not {experiment_id}: "
                         "the manifest changed since it was submitted")
    if address:
        from .cluster import connect
        connect(address)
        _coordinator(plan, journal_url, retry_failed=True, detached=True).run.remote()
        time.sleep(0.5)
        return experiment_id
    return run_experiment(source, progress=progress, num_cpus=num_cpus, journal_url=journal_url,
                          retry_failed=True)
