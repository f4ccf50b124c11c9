"""What the CLI calls: run, submit, status, results, cancel, resume. Plain functions, no printing
except the live progress of `run_experiment`.

    eid = run_experiment("examples/shapes-demo.yaml")          # embedded Ray, blocks, shows progress
    print(results("sqlite:///runs/journal.db", eid, "table"))
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.journal import EventKind, ExperimentStatus, IllegalTransition, TrialStatus, open_journal

from .plan import SweepPlan, plan_sweep
from .results import build_table, render_csv, render_json, render_table, select_metrics

log = logging.getLogger(__name__)
NAMESPACE = "orch"
DEFAULT_JOURNAL = os.environ.get("ORCH_JOURNAL", "sqlite:///runs/journal.db")


def _pretrain_record(spec, seed: int, resolution: int) -> dict[str, Any]:
    return {**spec.model_dump(mode="json"), "seed": seed, "resolution": resolution, "captions": "generic"}


def ensure_base(plan: SweepPlan, num_threads: int = 1, progress: bool = False) -> bool:
    """Pretrain and cache the tiny base in the blob store if the manifest needs it; True if built now.

    The settings are the manifest's `model.pretrain` (PretrainSpec defaults when unset), recorded
    next to the base (`models/tiny-sd-base.pretrain.json`); a cached base pretrained with other
    settings is an error rather than silently reused, since the trial ids say which base they mean.

    One torch thread by default: on this 2-core machine the VAE stage runs ~4 it/s on one thread
    but ~0.3 it/s on two as soon as any other process holds a core (every op's thread barrier
    waits on a descheduled thread), while two threads gain only ~1.4x on the denoiser stage.
    """
    import json

    from orchestrator.storage import open_store

    needing = [t.manifest for t in plan.trials if t.manifest.model.base is None]
    if not needing:
        return False  # before importing the ML core: the driver of a run needs none of it
    from orchestrator.training import TINY_BASE_PREFIX, pretrain_base, set_deterministic

    if len({_canonical(t.model.pretrain_settings) for t in needing}) > 1:
        raise ValueError(f"{plan.manifest_path}: model.pretrain differs between trials; one blob store holds "
                         "one tiny base, so model.pretrain cannot be swept")
    m = needing[0]
    spec = m.model.pretrain_settings
    src = m.data.train
    want = _pretrain_record(spec, src.seed if src else 0, m.model.resolution)
    store = open_store(plan.blobs_uri)
    record_key = f"{TINY_BASE_PREFIX}.pretrain.json"
    if store.exists(f"{TINY_BASE_PREFIX}/model_index.json"):
        if store.exists(record_key):
            have = json.loads(store.get(record_key))
            if have != want:
                raise ValueError(
                    f"the blob store {plan.blobs_uri} holds a tiny base pretrained with {have}, but "
                    f"{plan.manifest_path} asks for {want} (model.pretrain); delete {TINY_BASE_PREFIX}/ and "
                    f"{record_key} from the store, or point storage.blobs elsewhere")
        else:
            log.info("using the tiny base in %s (built by `orch pretrain`; its settings are not recorded)",
                     plan.blobs_uri)
        return False
    set_deterministic(num_threads)
    log.info("pretraining the tiny base (%s) into %s", want, plan.blobs_uri)
    with _pretrain_progress(spec, progress) as on_metrics:
        pretrain_base(TINY_BASE_PREFIX, None, steps=spec.steps, seed=want["seed"], n=spec.n,
                      size=m.model.resolution, vae_steps=spec.vae_steps, batch_size=spec.batch_size, lr=spec.lr,
                      store=store, on_metrics=on_metrics, **spec.recipe())
    store.put(record_key, (json.dumps(want, sort_keys=True, indent=1) + "\n").encode())  # written last: complete
    return True


@contextmanager
def _pretrain_progress(spec, show: bool):
    """A progress line for the minutes a first run spends pretraining (the VAE stage reports no
    steps, so the bar waits at 0 until the denoiser starts)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"pretraining the tiny base (VAE {spec.vae_steps} steps, then denoiser)",
                            total=spec.steps, loss="-")

        def on_metrics(m: dict) -> None:
            bar.update(task, completed=m["step"], loss=f"{m['loss']:.4f}")

        yield on_metrics


def _canonical(section) -> str:
    from orchestrator.manifest import canonical_json

    return canonical_json(section.model_dump(mode="json"))


def _coordinator(plan: SweepPlan, journal_url: str | None, retry_failed: bool, detached: bool):
    from .coordinator import ExperimentCoordinator

    opts: dict[str, Any] = {"name": f"coordinator-{plan.experiment_id}", "namespace": NAMESPACE,
                            "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    return ExperimentCoordinator.options(**opts).remote(str(plan.manifest_path), journal_url,
                                                        retry_failed=retry_failed)


def run_experiment(manifest_path: str | Path, *, progress: bool = True, num_cpus: int | None = None,
                   journal_url: str | None = None, retry_failed: bool = False) -> str:
    """Run a sweep to the end on an embedded local Ray; returns the experiment id.

    Finished trials in the journal are not run again; unfinished ones resume from their checkpoints.
    """
    import ray

    from .cluster import shutdown, start_local

    plan = plan_sweep(manifest_path)
    ensure_base(plan, progress=progress)
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


def results(journal_url: str, experiment_id: str, fmt: str = "table", metrics: list[str] | None = None) -> str:
    """The results table rendered as 'table', 'json' or 'csv'; `metrics` are glob patterns of the
    metric columns to keep (default: every metric in JSON and CSV, the headline ones in a table)."""
    renderers = {"table": render_table, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use table, json or csv")
    with open_journal(journal_url) as journal:
        table = build_table(journal, experiment_id)
    if metrics is not None or fmt == "table":
        table = select_metrics(table, metrics)
    return renderers[fmt](table)


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
