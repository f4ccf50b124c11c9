"""What the CLI calls: run, submit, status, results, cancel, resume. Plain functions, no printing
except the live progress of `run_experiment`.

    eid = run_experiment("examples/shapes-demo.yaml")          # embedded Ray, blocks, shows progress
    print(results("sqlite:///runs/journal.db", eid, "table"))
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.journal import EventKind, ExperimentStatus, IllegalTransition, LeaseLost, TrialStatus, open_journal

from .ownership import Ownership, claim, hand_over, kept
from .plan import SweepPlan, plan_sweep, recorded_plan
from .results import build_table, failed_trials, paired_tests, render_csv, render_json, render_paired, render_table, select_metrics

log = logging.getLogger(__name__)
NAMESPACE = "orch"
DEFAULT_JOURNAL = os.environ.get("ORCH_JOURNAL", "sqlite:///runs/journal.db")


def _pretrain_record(spec, seed: int, resolution: int) -> dict[str, Any]:
    return {**spec.model_dump(mode="json"), "seed": seed, "resolution": resolution, "captions": "generic"}


def ensure_base(plan: SweepPlan, num_threads: int = 1, progress: bool = False) -> bool:
    """Pretrain and cache each tiny base the manifest needs in the blob store; True if any was built now.

    One base per variant (`INFO.tiny_base`: SD's and GLIDE-mini's side by side in one sweep). The
    settings are the manifest's `model.pretrain` (PretrainSpec defaults when unset), recorded next
    to the base (`<prefix>.pretrain.json`); a cached base pretrained with other settings is an
    error rather than silently reused, since the trial ids say which base they mean.

    One torch thread by default: on this 2-core machine the VAE stage runs ~4 it/s on one thread
    but ~0.3 it/s on two as soon as any other process holds a core (every op's thread barrier
    waits on a descheduled thread), while two threads gain only ~1.4x on the denoiser stage.
    """
    needing = [t.manifest for t in plan.trials if t.manifest.model.base is None]
    if not needing:
        return False  # before importing the ML core: the driver of a run needs none of it
    from orchestrator.models.registry import get_variant

    by_variant: dict[str, list] = {}
    for m in needing:
        by_variant.setdefault(m.model.variant, []).append(m)
    built = False
    for name, manifests in by_variant.items():
        built = _ensure_variant_base(plan, get_variant(name), manifests, num_threads, progress) or built
    return built


def _ensure_variant_base(plan: SweepPlan, variant, needing: list, num_threads: int, progress: bool) -> bool:
    import json

    from orchestrator.storage import open_store
    from orchestrator.training import pretrain_base, set_deterministic

    name, prefix = variant.INFO.name, variant.INFO.tiny_base
    if prefix is None:
        raise ValueError(f"{plan.origin}: model.base is null, but variant {name!r} has no tiny shapes base; "
                         f"set model.base")
    if len({_canonical(t.model.pretrain_settings) for t in needing}) > 1:
        raise ValueError(f"{plan.origin}: model.pretrain differs between {name} trials; one blob store holds "
                         f"one tiny base per variant, so model.pretrain cannot be swept")
    m = needing[0]
    spec = m.model.pretrain_settings
    src = m.data.train
    want = _pretrain_record(spec, src.seed if src else 0, m.model.resolution)
    store = open_store(plan.blobs_uri)
    record_key = f"{prefix}.pretrain.json"
    if store.exists(f"{prefix}/model_index.json"):
        if store.exists(record_key):
            have = json.loads(store.get(record_key))
            if have != want:
                raise ValueError(
                    f"the blob store {plan.blobs_uri} holds a tiny {name} base pretrained with {have}, but "
                    f"{plan.origin} asks for {want} (model.pretrain); delete {prefix}/ and "
                    f"{record_key} from the store, or point storage.blobs elsewhere")
        else:
            log.info("using the tiny %s base in %s (built by `orch pretrain`; its settings are not recorded)",
                     name, plan.blobs_uri)
        return False
    set_deterministic(num_threads)
    log.info("pretraining the tiny %s base (%s) into %s", name, want, plan.blobs_uri)
    # A variant that pretrains through its own objective has no VAE stage in front.
    stages = "denoiser" if hasattr(variant, "pretrain_options") else f"VAE {spec.vae_steps} steps, then denoiser"
    with _pretrain_progress(spec, progress, f"{name} base ({stages})") as on_metrics:
        pretrain_base(prefix, None, steps=spec.steps, seed=want["seed"], n=spec.n,
                      size=m.model.resolution, vae_steps=spec.vae_steps, batch_size=spec.batch_size, lr=spec.lr,
                      store=store, on_metrics=on_metrics, variant=name, **spec.recipe())
    store.put(record_key, (json.dumps(want, sort_keys=True, indent=1) + "\n").encode())  # written last: complete
    return True


@contextmanager
def _pretrain_progress(spec, show: bool, what: str):
    """A progress line for the minutes a first run spends pretraining (the VAE stage reports no
    steps, so the bar waits at 0 until the denoiser starts)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"pretraining the tiny {what}",
                            total=spec.steps, loss="-")

        def on_metrics(m: dict) -> None:
            bar.update(task, completed=m["step"], loss=f"{m['loss']:.4f}")

        yield on_metrics


def _canonical(section) -> str:
    from orchestrator.manifest import canonical_json

    return canonical_json(section.model_dump(mode="json"))


def _coordinator(plan: SweepPlan, journal_url: str | None, retry_failed: bool, detached: bool,
                 ownership: Ownership, restart_missing: bool = False):
    from .coordinator import ExperimentCoordinator

    from .cluster import ON_HEAD

    opts: dict[str, Any] = {"name": f"coordinator-{plan.experiment_id}", "namespace": NAMESPACE,
                            "get_if_exists": True, **ON_HEAD}
    if detached:  # it outlives this driver: the lease is handed over and the coordinator keeps it
        opts["lifetime"] = "detached"
        ownership = hand_over(ownership)
    return ExperimentCoordinator.options(**opts).remote(plan.to_json(), journal_url,
                                                        retry_failed=retry_failed, restart_missing=restart_missing,
                                                        ownership=ownership, adopt=detached)


def claim_experiment(plan: SweepPlan, journal_url: str | None, wait: bool) -> Ownership:
    """The experiment's lease for this driver (LeaseHeld when another live run has it; with
    `wait`, once that run is over)."""
    def on_wait(lease) -> None:  # said whatever the progress setting: the wait may be long
        _print_line(f"experiment {plan.experiment_id} is being run by {lease.describe()}; waiting for it to end")

    return claim(journal_url or plan.journal_url, plan.experiment_id, wait=wait, on_wait=on_wait)


def preflight(plan: SweepPlan, journal_url: str | None = None) -> None:
    """The journal and the blob store, checked before Ray starts or anything is written: each
    problem one line naming the location (bad input exit 2, unreachable or full exit 1)."""
    from orchestrator.storage.location import check_blob_store

    # Temp files of puts killed with an earlier run go now (stale and unlocked ones only: a
    # concurrent run's uploads are safe, see LocalBlobStore.sweep_orphans).
    check_blob_store(plan.blobs_uri).sweep_orphans()
    open_journal(journal_url or plan.journal_url).close()


def _print_notice(notice: dict, console=None) -> None:
    from rich.console import Console

    details = ", ".join(f"{k}={v}" for k, v in notice.items() if k not in ("trial_id", "kind"))
    (console or Console(stderr=True)).print(f"[yellow]warning[/] {notice['trial_id']}: "
                                            f"{notice['kind'].replace('_', ' ')} ({details})", soft_wrap=True)


class Preempted(Exception):
    """`orch run` / `resume` stopped by SIGTERM or SIGINT: trainers checkpointed, Ray shut down."""

    def __init__(self, signum: int, experiment_id: str, clean: bool):
        self.signum, self.experiment_id, self.clean = signum, experiment_id, clean
        super().__init__(f"preempted by {signal.Signals(signum).name}: "
                         + ("every running trial checkpointed" if clean else "the grace period ran out")
                         + f"; `orch resume {experiment_id}` continues")


class _Preemption:
    """SIGTERM / SIGINT while a sweep runs: remembered by the handler, acted on by the waiting
    loop (no Ray call inside a signal handler), with a grace period for trainers to checkpoint."""

    def __init__(self, grace_s: float):
        self.grace_s, self.signum, self.at, self.sent = grace_s, None, None, False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Preemption":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()

    def tick(self, coord) -> bool:
        """Forward a pending signal to the coordinator; True once the grace period is over."""
        if self.signum is None:
            return False
        if not self.sent:
            coord.preempt.remote()
            self.sent = True
        return time.monotonic() - self.at > self.grace_s


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
                _print_line(served.note)
        try:
            return _run_embedded(*args, served, own, keeper)
        finally:
            served.finish()


@dataclasses.dataclass(frozen=True)
class MetricsOptions:
    port: int = 9464               # 0: any free port
    sd_file: str | None = None     # a Prometheus file_sd file that lists the endpoint while the run lasts


def _print_line(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, markup=False, soft_wrap=True)


def _run_embedded(plan: SweepPlan, progress: bool, num_cpus: int | None, journal_url: str | None,
                  retry_failed: bool, restart_missing: bool, grace_s: float, served, own: Ownership,
                  keeper) -> str:
    import ray

    from .cluster import shutdown, start_local

    info = start_local(num_cpus=num_cpus)
    clean, lost, unavailable = True, None, None
    try:
        coord = _coordinator(plan, journal_url, retry_failed, detached=False, ownership=own,
                             restart_missing=restart_missing)
        done_ref = coord.run.remote()
        with _Preemption(grace_s) as stop:
            shown = _show_progress(coord, done_ref, plan, stop, keeper) if progress else 0
            while not ray.wait([done_ref], timeout=0.5)[0]:
                if keeper.lost:  # another run took the experiment over: stop writing, now
                    break
                if stop.tick(coord):
                    clean = False
                    break
        if keeper.lost:
            lost = keeper.lost
        elif clean:
            outcome = ray.get(done_ref)
            lost, unavailable = outcome.get("lease_lost"), outcome.get("journal_unavailable")
        if served is not None:
            served.mark_done()
        for notice in ray.get(coord.notices.remote(shown)):  # on the console, not only in Ray's logs
            _print_notice(notice)
        ray.kill(coord)
    finally:
        shutdown(info)
    if lost:
        raise LeaseLost(lost)
    if unavailable:  # the journal could not record the run: exit 1 with its one line, not a results table
        from orchestrator.journal.retry import JournalUnavailable
        raise JournalUnavailable(unavailable)
    if stop.signum is not None:
        raise Preempted(stop.signum, plan.experiment_id, clean)
    return plan.experiment_id


def _show_progress(coord, done_ref, plan: SweepPlan, stop: _Preemption, keeper) -> int:
    """Live bars until the sweep ends, with each fallback a trainer takes printed above them;
    returns how many notices were printed."""
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {t.id: t.label for t in plan.trials}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn()) as bar:
        tasks = {t.id: bar.add_task(f"{t.id} {labels[t.id]}", total=t.manifest.train.steps, status="queued",
                                    loss="-") for t in plan.trials}
        shown = 0
        while True:
            ready, _ = ray.wait([done_ref], timeout=0.5)
            for tid, p in ray.get(coord.progress.remote()).items():
                loss = p.get("loss")
                bar.update(tasks[tid], completed=p.get("step", 0), status=p.get("status", ""),
                           loss="-" if loss is None else f"{loss:.4f}")
            for notice in ray.get(coord.notices.remote(shown)):
                _print_notice(notice, bar.console)
                shown += 1
            if ready or keeper.lost or stop.tick(coord):
                return shown


def submit(manifest_path: str | Path, address: str, *, journal_url: str | None = None) -> str:
    """Start a sweep on a running cluster under a detached coordinator; returns at once with its id.

    The plan travels by value: the cluster's nodes never read the manifest file. They must reach
    the manifest's storage (Azure blobs, a PostgreSQL journal) and its datasets and model paths."""
    return submit_plan(plan_sweep(manifest_path), address, journal_url=journal_url)


def submit_plan(plan: SweepPlan, address: str, *, journal_url: str | None = None) -> str:
    """`submit` of a manifest already loaded and planned (the head's HTTP API plans it once to
    validate it). `journal_url` overrides the manifest's journal everywhere, preflight included."""
    from .cluster import connect

    preflight(plan, journal_url)
    own = claim_experiment(plan, journal_url, wait=False)
    with kept(own, release=False):  # released by the coordinator when the sweep ends
        ensure_base(plan)
        connect(address)
        coord = _coordinator(plan, journal_url, retry_failed=False, detached=True, ownership=own)
        _start_detached(coord)
    return plan.experiment_id


def _start_detached(coord) -> None:
    """Start the coordinator's run and return once the actor has it. A call made before the actor
    is up waits in this process and was lost when it exited (the old half-second sleep was too
    short on a loaded head): calls from one caller are sent in order, so an answer to the next
    one means `run` has left."""
    import ray

    coord.run.remote()
    ray.get(coord.experiment_id.remote(), timeout=120)


def status(journal_url: str = DEFAULT_JOURNAL, experiment_id: str | None = None) -> list[dict[str, Any]]:
    """Experiments (all, or one with its trials) as plain data."""
    with open_journal(journal_url, create=False) as journal:
        states = ([journal.experiment_state(experiment_id)] if experiment_id else journal.list_experiments())
        leases = {s.experiment_id: journal.lease(s.experiment_id) for s in states}
    out = []
    for s in states:
        lease = leases[s.experiment_id]
        rec: dict[str, Any] = {"experiment_id": s.experiment_id, "name": s.name, "status": s.status.value,
                               "counts": {k.value: v for k, v in s.counts().items() if v},
                               "updated_at": str(s.updated_at) if s.updated_at else None,
                               "owner": None if lease is None or lease.free() else lease.describe()}
        if experiment_id:
            rec["trials"] = [{"trial_id": t.trial_id, "status": t.status.value, "attempts": t.attempts,
                              "checkpoint_step": t.last_checkpoint_step, "metrics": t.latest_metrics(),
                              "error": t.last_error} for t in s.trials.values()]
        out.append(rec)
    return out


def results(journal_url: str, experiment_id: str, fmt: str = "table", metrics: list[str] | None = None,
            paired: str | None = None) -> str:
    """The results table rendered as 'table', 'json' or 'csv'; `metrics` are glob patterns of the
    metric columns to keep (default: every metric in JSON and CSV, the headline ones in a table).
    `paired` (a swept field) adds McNemar's test between trials that differ only in it."""
    renderers = {"table": render_table, "json": render_json, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use table, json or csv")
    if paired and fmt == "csv":
        raise ValueError("paired tests print as a table or json, not csv")
    with open_journal(journal_url, create=False) as journal:
        table = build_table(journal, experiment_id)
        tests = paired_tests(journal, experiment_id, paired) if paired else None
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
    with open_journal(journal_url, create=False) as journal:
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
        dest = Path(out_dir) / experiment_id / key[len(prefix):]
        store.get_file(key, dest)
        written.append(dest)
    return written


def cancel(journal_url: str, experiment_id: str) -> dict[str, int]:
    """Cancel through the journal: a running coordinator sees it within seconds and stops its
    trainers; queued and never-started trials are cancelled here. Returns the trial counts."""
    from .journaling import RunJournal

    with open_journal(journal_url, create=False) as journal:
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


def resume(journal_url: str, experiment_id: str, *, progress: bool = True, address: str | None = None,
           num_cpus: int | None = None, restart_missing: bool = False, grace_s: float = 30.0,
           metrics: MetricsOptions | None = None, wait: bool = False) -> str:
    """Finish an interrupted or cancelled experiment from its journal; failed trials are retried."""
    with open_journal(journal_url, create=False) as journal:  # the plan as journaled, not the file
        plan = recorded_plan(journal, experiment_id, journal_url, on_fallback=_print_line)
    if address:
        from .cluster import connect
        own = claim_experiment(plan, journal_url, wait)
        with kept(own, release=False):  # released by the coordinator when the sweep ends
            connect(address)
            _start_detached(_coordinator(plan, journal_url, retry_failed=True, detached=True, ownership=own,
                                         restart_missing=restart_missing))
        return experiment_id
    return run_plan(plan, progress=progress, num_cpus=num_cpus, journal_url=journal_url,
                    retry_failed=True, restart_missing=restart_missing, grace_s=grace_s, metrics=metrics,
                    wait=wait)
