"""The commands of an experiment's life: `orch run`, `submit`, `status`, `results`, `report`,
`cancel`, `resume`. Submit, status, results and cancel go to the backend `choose_backend` picks
(the head's HTTP API with `--api`, else this machine's journal); run and resume are local.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from ..manifest import ManifestError
from ..results import ResultsFormat
from .common import (
    API_HELP,
    BLOBS_HELP,
    JOURNAL_HELP,
    PlanFormat,
    TextFormat,
    api_errors,
    bad_manifest,
    choose_backend,
    emit_json,
    err,
    head,
    journal_or_default,
    load_or_exit,
    out,
    run_errors,
)

WAIT_OPTION = typer.Option(False, "--wait", help="When another live run owns the experiment, wait for it to "
                           "end, then run what is left (default: say who owns it and exit 3).")
GRACE_OPTION = typer.Option(30.0, "--grace", min=0.0, help="Seconds SIGTERM/SIGINT gives trainers to checkpoint.")
# `orch run` and `orch resume` (embedded) serve the run's Prometheus metrics while they run.
METRICS_OPTION = typer.Option(True, "--metrics/--no-metrics", help="Serve Prometheus metrics while it runs.")
METRICS_PORT_OPTION = typer.Option(9464, "--metrics-port", envvar="ORCH_METRICS_PORT", min=0,
                                   help="Port of the metrics endpoint (0: any free port; a taken one falls back).")
METRICS_SD_OPTION = typer.Option(None, "--metrics-sd", envvar="ORCH_METRICS_SD",
                                 help="A Prometheus file_sd file listing the endpoint while the run lasts.")


def _metrics_options(on: bool, port: int, sd_file: Path | None):
    from ..app.run import MetricsOptions

    return MetricsOptions(port, str(sd_file) if sd_file else None) if on else None


def run(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    cpus: int = typer.Option(None, "--cpus", min=1, help="CPU slots for the embedded Ray (default: all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    format: PlanFormat = typer.Option(PlanFormat.table, "--format", help="Results as table or json."),
    paired: str = typer.Option(None, "--paired", help="A swept field: McNemar's test between trials that "
                               "differ only in it (e.g. data.train.captions)."),
    grids: Path = typer.Option(None, "--grids", help="Also write the evaluated sample grids here as plain PNGs."),
    grace: float = GRACE_OPTION,
    wait: bool = WAIT_OPTION,
    metrics: bool = METRICS_OPTION,
    metrics_port: int = METRICS_PORT_OPTION,
    metrics_sd: Path = METRICS_SD_OPTION,
) -> None:
    """Run a sweep on an embedded local Ray (SQLite journal, local blobs) and print the results."""
    from ..app import queries
    from ..app.run import run_plan
    from ..experiment.plan import plan_sweep

    load_or_exit(file, "json" if format is PlanFormat.json else "text")
    served = _metrics_options(metrics, metrics_port, metrics_sd)
    with run_errors("run"):
        plan = plan_sweep(file)  # read once: the run and the results after it use this plan, not the file
        eid = run_plan(plan, progress=progress and format is PlanFormat.table, num_cpus=cpus,
                       grace_s=grace, metrics=served, wait=wait)
        table = queries.results(plan.journal_url, eid, format.value, paired=paired)
        if grids is not None:
            written = queries.export_grids(plan.blobs_uri, eid, grids)
            err.print(f"wrote {len(written)} sample grid(s) to {grids / eid}", markup=False)
        failed = queries.failures(plan.journal_url, eid)
    sys.stdout.write(table if table.endswith("\n") else table + "\n")
    _exit_if_failed("run", eid, failed)


def _exit_if_failed(command: str, eid: str, failed: list[tuple[str, str]]) -> None:
    """A sweep with a failed trial is not a success: say which and why, exit 1."""
    if not failed:
        return
    err.print(f"orch {command}: {len(failed)} trial(s) of {eid} failed:", markup=False)
    for tid, error in failed:
        err.print(f"  {tid}: {error}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def submit(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML), readable by the cluster's workers."),
    address: str = typer.Option(None, "--address", help="Ray cluster address, e.g. head-host:6380."),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Submit a manifest to a running Ray cluster (--address) or to the head's API (--api); returns
    once a coordinator has it. The same manifest again is the same experiment, never a second run."""
    if (address is None) == (api_url is None):
        err.print("orch submit: give --address (a Ray cluster) or --api (the head's HTTP API)", markup=False)
        raise typer.Exit(2)
    target = choose_backend(api_url, address=address)
    with target.errors("submit"):
        try:
            sub = target.backend.submit(file)
        except ManifestError as exc:  # the head's issues are listed against the local file
            bad_manifest(exc, "text", file)
    what = "already submitted:" if sub.created is False else "submitted"
    trials = "" if sub.trials is None else f" ({sub.trials} trial(s))"
    out.print(f"{what} experiment [bold]{sub.experiment_id}[/]{trials}; follow it with `{sub.follow}`")


def status(
    experiment: str = typer.Argument(None, help="Experiment id; all experiments when left out."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
    follow: bool = typer.Option(False, "--follow", help="With --api and an experiment id: print its journal "
                                "events as they happen, until it is done or cancelled."),
    quotas: bool = typer.Option(False, "--quotas", help="Each tenant of the shared cluster: its quota and "
                                "priority, what its running trials hold, how many wait (--api, or --address)."),
    address: str = typer.Option(None, "--address", help="With --quotas and no --api: the Ray cluster's address."),
) -> None:
    """Show experiments, or one experiment's trials with their states and latest metrics."""
    from ..results import one_line

    if follow:
        return _follow(api_url, experiment, format)
    if quotas:
        return _quotas(api_url, journal, address, format)
    target = choose_backend(api_url, journal)
    with target.errors("status"):
        records = target.backend.status(experiment)
    if format is TextFormat.json:
        emit_json(records)
        return
    title = "experiments" if experiment is None else f"experiment {experiment}"
    if experiment is not None and records[0]["owner"]:
        title += f"\nrun by {records[0]['owner']}"
    tenant = records[0].get("tenant") if experiment is not None else None
    if tenant:
        title += f"\nfor {tenant['name']}, priority {tenant['priority']}"
    table = Table(title=title)
    if experiment is None:
        for col in ("experiment", "name", "status", "trials", "updated"):
            table.add_column(col)
        for r in records:
            counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items())
            table.add_row(r["experiment_id"], r["name"], r["status"], counts, r["updated_at"] or "")
    else:
        for col in ("trial", "status", "attempts", "checkpoint", "metrics", "error"):
            table.add_column(col)
        for t in records[0]["trials"]:
            metrics = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in (t["metrics"] or {}).items())
            table.add_row(t["trial_id"], t["status"], str(t["attempts"]), str(t["checkpoint_step"] or ""),
                          metrics, one_line(t["error"]) if t["error"] else "")
    out.print(table)


def _quotas(api_url: str | None, journal: str | None, address: str | None, format: TextFormat) -> None:
    """`orch status --quotas`: the cluster's admission book, a row per tenant."""
    target = choose_backend(api_url, journal, address)
    with target.errors("status --quotas"):
        rows = target.backend.quotas()
    if format is TextFormat.json:
        emit_json(rows)
        return
    table = Table(title="tenants (highest priority first)")
    for col in ("tenant", "priority", "quota", "running", "waiting", "experiments"):
        table.add_column(col)

    def amounts(d: dict) -> str:
        return ", ".join(f"{d[k]:g} {k}" for k in ("gpus", "cpus") if d.get(k) is not None) or "no limit"

    for r in rows:
        running = f"{r['running']['trials']} trial(s): {amounts(r['running'])}"
        table.add_row(r["name"], str(r["priority"]), amounts(r["quota"]), running, str(r["waiting_trials"]),
                      str(len(r["experiments"])))
    out.print(table)


def _follow(url: str | None, experiment: str | None, format: TextFormat) -> None:
    """`orch status ID --api URL --follow`: one line (or JSON document) per journal event."""
    if url is None or experiment is None:
        err.print("orch status --follow: needs an experiment id and --api URL", markup=False)
        raise typer.Exit(2)
    client = head(url)
    with api_errors("status"):
        for e in client.events(experiment):
            if format is TextFormat.json:
                sys.stdout.write(json.dumps(e) + "\n")
                sys.stdout.flush()
                continue
            details = ", ".join(f"{k}={v}" for k, v in (e.get("payload") or {}).items() if k != "metrics")
            who = e["trial_id"] or "experiment"
            out.print(f"{e['at'] or ''} #{e['seq']} {who} {e['kind']}" + (f" ({details})" if details else ""),
                      markup=False, highlight=False, soft_wrap=True)


def results(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: ResultsFormat = typer.Option(ResultsFormat.table, "--format"),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated globs of metric columns, e.g. "
                                "'spatial.*,winoground.*/*' (default: all in json/csv; a table leaves out "
                                "per-tag ones)."),
    paired: str = typer.Option(None, "--paired", help="A swept field: McNemar's test between trials that "
                               "differ only in it (e.g. data.train.captions)."),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Print an experiment's results: rows are trials, columns swept fields and metrics (mean ± std over
    seeds; a single trial's value with its 95% interval; n= in a header is the samples behind each value)."""
    target = choose_backend(api_url, journal)
    with target.errors("results"):
        text = target.backend.results(experiment, format.value, metrics, paired)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def report(
    experiment: str = typer.Argument(..., help="Experiment id."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write (replaced whole): index.html and PNGs."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    blobs: str = typer.Option(None, "--blobs", help=BLOBS_HELP + " Default: the one the experiment's manifest names."),
) -> None:
    """Write a static HTML report of an experiment: results table, loss and learning-rate curves, metrics
    over steps, base and final sample grids, DrawBench sheets, human grading, the manifest."""
    from ..report import build_report

    with run_errors("report"):
        index = build_report(journal_or_default(journal), experiment, out_dir, blobs_uri=blobs)
    out.print(f"wrote {index}", markup=False, highlight=False, soft_wrap=True)


def cancel(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Cancel an experiment: queued trials now, running ones as their coordinator sees it."""
    target = choose_backend(api_url, journal)
    with target.errors("cancel"):
        counts = target.backend.cancel(experiment)
    out.print(f"cancelled {experiment}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def resume(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    address: str = typer.Option(None, "--address", help="Resume on a running cluster instead of embedded Ray."),
    cpus: int = typer.Option(None, "--cpus", min=1),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    restart_missing: bool = typer.Option(False, "--restart-missing", help="Train a trial from step 0 when the "
                                         "checkpoints its journal records are all gone from the blob store."),
    grace: float = GRACE_OPTION,
    wait: bool = WAIT_OPTION,
    metrics: bool = METRICS_OPTION,
    metrics_port: int = METRICS_PORT_OPTION,
    metrics_sd: Path = METRICS_SD_OPTION,
) -> None:
    """Finish an interrupted experiment from its journal; finished trials are not run again."""
    from ..app import queries
    from ..app.run import resume as resume_experiment

    url = journal_or_default(journal)
    with run_errors("resume"):
        eid = resume_experiment(url, experiment, progress=progress, address=address, num_cpus=cpus,
                                restart_missing=restart_missing, grace_s=grace, wait=wait,
                                metrics=_metrics_options(metrics, metrics_port, metrics_sd))
        if address is None:
            text = queries.results(url, eid, "table")
            failed = queries.failures(url, eid)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            _exit_if_failed("resume", eid, failed)
        else:
            out.print(f"resumed {eid} on {address}")


def register(app: typer.Typer) -> None:
    for command in (run, submit, status, results, report, cancel, resume):
        app.command()(command)
