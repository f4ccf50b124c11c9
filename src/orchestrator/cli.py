"""`orch`: the command line. Thin: parses arguments, calls the library, renders the result.

Exit codes: 0 success, 2 bad input (with file, field path and line), 3 another live run owns the
experiment (`run`/`resume`: nothing done; `--wait` waits for it), 1 anything else.
Human output goes through Rich; `--format json` prints one JSON document on stdout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local paths or blobs, never a hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own Rich progress is the one to read

import typer
from rich.console import Console
from rich.table import Table

from .data.worlds import DEFAULT_WORLD
from .manifest import ManifestError, expand, experiment_id
from .models.registry import load_checked_manifest

app = typer.Typer(
    name="orch",
    help="Finetune and evaluate text-to-image diffusion models on compositional reasoning, "
    "from one CPU to a Ray cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build datasets: the shapes world, GQA-Captions, shards.", no_args_is_help=True)
app.add_typer(data_app, name="data")
journal_app = typer.Typer(help="Operate on a journal database (SQLite file or PostgreSQL).", no_args_is_help=True)
app.add_typer(journal_app, name="journal")
blobs_app = typer.Typer(help="Look into a blob store (local or Azure): list keys, fetch an object verified.",
                        no_args_is_help=True)
app.add_typer(blobs_app, name="blobs")
grade_app = typer.Typer(help="Human evaluation: build a grading task, serve its page, tally the grades.",
                        no_args_is_help=True)
app.add_typer(grade_app, name="grade")
BLOBS_HELP = "Blob store URI: file://DIR, a path, or az://container/prefix."

out = Console()
err = Console(stderr=True)


class TextFormat(str, Enum):
    text = "text"
    json = "json"


class PlanFormat(str, Enum):
    table = "table"
    json = "json"


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _bad_manifest(exc: ManifestError, fmt: str, file: Path) -> NoReturn:
    if fmt == "json":
        _emit_json({"file": str(file), "valid": False, "errors": [i.as_dict() for i in exc.issues]})
    else:
        err.print(f"[bold red]{len(exc.issues)} problem(s)[/] in {file}:")
        for issue in exc.issues:
            err.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_or_exit(file: Path, fmt: str):
    """The manifest and its trials, or exit 2 listing every problem."""
    try:
        loaded = load_checked_manifest(file)
        return loaded, expand(loaded)
    except ManifestError as exc:
        _bad_manifest(exc, fmt, file)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format", help="text or json."),
) -> None:
    """Check a manifest: schema, referenced files, every swept value. Exit 2 lists all problems."""
    loaded, trials = _load_or_exit(file, format.value)
    if format is TextFormat.json:
        _emit_json({"file": str(file), "valid": True, "errors": [], "trials": len(trials)})
    else:
        out.print(f"[green]valid[/]: {file} ({loaded.manifest.name}, {len(trials)} trial(s))")


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    format: PlanFormat = typer.Option(PlanFormat.table, "--format", help="table or json."),
) -> None:
    """Show the trials a manifest's sweep expands to, with their stable ids."""
    loaded, trials = _load_or_exit(file, "json" if format is PlanFormat.json else "text")
    eid = experiment_id(loaded, trials)
    if format is PlanFormat.json:
        _emit_json({
            "experiment_id": eid,
            "name": loaded.manifest.name,
            "trials": [{"id": t.id, "index": t.index, "overrides": t.overrides, "config": t.config} for t in trials],
        })
        return
    swept = list(dict.fromkeys(k for t in trials for k in t.overrides))
    table = Table(title=f"{loaded.manifest.name} · experiment {eid} · {len(trials)} trial(s)")
    table.add_column("#", justify="right")
    table.add_column("trial")
    for key in swept:
        table.add_column(key)
    for t in trials:
        table.add_row(str(t.index), t.id, *(_cell(t.overrides.get(k, "")) for k in swept))
    out.print(table)


def _cell(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


JOURNAL_HELP = "Journal URL (default: $ORCH_JOURNAL or sqlite:///runs/journal.db)."


def _default_journal() -> str:
    return os.environ.get("ORCH_JOURNAL", "sqlite:///runs/journal.db")


@contextmanager
def _run_errors(command: str):
    """Map the runtime's bad-input errors to exit 2 with one clear line, journal faults to 1."""
    from .actors.api import Preempted
    from .journal import JournalError, LeaseHeld, LeaseLost, UnknownExperiment
    from .storage import StorageError

    try:
        yield
    except Preempted as exc:  # SIGTERM/SIGINT: checkpointed and shut down; the shell's 128 + signal
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(128 + exc.signum)
    except LeaseHeld as exc:  # another live run owns the experiment: nothing was done
        err.print(f"orch {command}: {exc}; not started (--wait runs it after that run ends)", markup=False,
                  soft_wrap=True)
        raise typer.Exit(3)
    except LeaseLost as exc:  # another run took it over: this one stopped writing
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(3)
    except (UnknownExperiment, LookupError, ValueError, FileNotFoundError) as exc:
        err.print(f"orch {command}: {exc.args[0] if exc.args else exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    except (JournalError, StorageError) as exc:  # unreachable, full: nothing wrong with the input
        err.print(f"orch {command}: {_one_line(exc)}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    except OSError as exc:  # name the path it failed on
        err.print(f"orch {command}: {exc.strerror or exc}: {exc.filename or ''}", markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _one_line(exc: BaseException) -> str:
    """An error as one line: a StorageError's message names store, key and cause; an error a Ray
    actor raised is shown as itself (`cause`), not as Ray's wrapper with the remote traceback."""
    inner = getattr(exc, "cause", None)
    shown = inner if isinstance(inner, BaseException) else exc
    lines = [ln.strip() for ln in str(shown).splitlines() if ln.strip()]
    return lines[0] if lines else type(shown).__name__


WAIT_OPTION = typer.Option(False, "--wait", help="When another live run owns the experiment, wait for it to "
                           "end, then run what is left (default: say who owns it and exit 3).")
# `orch run` and `orch resume` (embedded) serve the run's Prometheus metrics while they run.
METRICS_OPTION = typer.Option(True, "--metrics/--no-metrics", help="Serve Prometheus metrics while it runs.")
METRICS_PORT_OPTION = typer.Option(9464, "--metrics-port", envvar="ORCH_METRICS_PORT", min=0,
                                   help="Port of the metrics endpoint (0: any free port; a taken one falls back).")
METRICS_SD_OPTION = typer.Option(None, "--metrics-sd", envvar="ORCH_METRICS_SD",
                                 help="A Prometheus file_sd file listing the endpoint while the run lasts.")


def _metrics_options(on: bool, port: int, sd_file: Path | None):
    from .actors.api import MetricsOptions

    return MetricsOptions(port, str(sd_file) if sd_file else None) if on else None


@app.command()
def run(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    cpus: int = typer.Option(None, "--cpus", min=1, help="CPU slots for the embedded Ray (default: all)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    format: PlanFormat = typer.Option(PlanFormat.table, "--format", help="Results as table or json."),
    paired: str = typer.Option(None, "--paired", help="A swept field: McNemar's test between trials that "
                               "differ only in it (e.g. data.train.captions)."),
    grids: Path = typer.Option(None, "--grids", help="Also write the evaluated sample grids here as plain PNGs."),
    grace: float = typer.Option(30.0, "--grace", min=0.0, help="Seconds SIGTERM/SIGINT gives trainers to checkpoint."),
    wait: bool = WAIT_OPTION,
    metrics: bool = METRICS_OPTION,
    metrics_port: int = METRICS_PORT_OPTION,
    metrics_sd: Path = METRICS_SD_OPTION,
) -> None:
    """Run a sweep on an embedded local Ray (SQLite journal, local blobs) and print the results."""
    from .actors import api
    from .actors.plan import plan_sweep

    _load_or_exit(file, "json" if format is PlanFormat.json else "text")
    served = _metrics_options(metrics, metrics_port, metrics_sd)
    with _run_errors("run"):
        eid = api.run_experiment(file, progress=progress and format is PlanFormat.table, num_cpus=cpus,
                                 grace_s=grace, metrics=served, wait=wait)
        plan = plan_sweep(file)
        table = api.results(plan.journal_url, eid, format.value, paired=paired)
        if grids is not None:
            written = api.export_grids(plan.blobs_uri, eid, grids)
            err.print(f"wrote {len(written)} sample grid(s) to {grids / eid}", markup=False)
        failed = api.failures(plan.journal_url, eid)
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


API_HELP = "The head's HTTP API, e.g. http://head:8470 (token from $ORCH_API_TOKEN); no Ray client needed."


@contextmanager
def _api_errors(command: str):
    """The head's answers as exit codes: refused (4xx) 2, unreachable or failing 1."""
    from .api.client import ApiError

    try:
        yield
    except ApiError as exc:
        err.print(f"orch {command}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2 if exc.bad_input else 1)


def _head(url: str):
    from .api.client import Head

    with _api_errors("--api"):
        return Head(url)


@app.command()
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
    if api_url is not None:
        return _submit_api(file, api_url)
    from .actors import api

    _load_or_exit(file, "text")
    with _run_errors("submit"):
        eid = api.submit(file, address)
    out.print(f"submitted experiment [bold]{eid}[/]; follow it with `orch status {eid}`")


def _submit_api(file: Path, url: str) -> None:
    """The head validates (against its data roots); its issues are printed against the local file."""
    from .api.client import ApiError
    from .manifest import ManifestError, ManifestIssue

    head = _head(url)
    try:
        body = file.read_bytes()
    except OSError as exc:
        err.print(f"orch submit: {file}: {exc.strerror or exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    try:
        created, answer = head.submit(body)
    except ApiError as exc:
        rows = exc.body.get("errors") if exc.status == 422 and isinstance(exc.body, dict) else None
        if rows:
            issues = [ManifestIssue(str(file), r["path"], r["line"], r["message"]) for r in rows]
            _bad_manifest(ManifestError(issues), "text", file)
        with _api_errors("submit"):
            raise
    eid = answer["experiment_id"]
    what = "submitted" if created else "already submitted:"
    out.print(f"{what} experiment [bold]{eid}[/] ({answer['trials']} trial(s)); follow it with "
              f"`orch status {eid} --api {url} --follow`")


@app.command()
def status(
    experiment: str = typer.Argument(None, help="Experiment id; all experiments when left out."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
    follow: bool = typer.Option(False, "--follow", help="With --api and an experiment id: print its journal "
                                "events as they happen, until it is done or cancelled."),
) -> None:
    """Show experiments, or one experiment's trials with their states and latest metrics."""
    from .actors.results import one_line

    if follow:
        return _follow(api_url, experiment, format)
    if api_url is not None:
        with _api_errors("status"):
            records = _head(api_url).status(experiment)
    else:
        from .actors import api

        with _run_errors("status"):
            records = api.status(journal or _default_journal(), experiment)
    if format is TextFormat.json:
        _emit_json(records)
        return
    title = "experiments" if experiment is None else f"experiment {experiment}"
    if experiment is not None and records[0]["owner"]:
        title += f"\nrun by {records[0]['owner']}"
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


def _follow(url: str | None, experiment: str | None, format: TextFormat) -> None:
    """`orch status ID --api URL --follow`: one line (or JSON document) per journal event."""
    if url is None or experiment is None:
        err.print("orch status --follow: needs an experiment id and --api URL", markup=False)
        raise typer.Exit(2)
    head = _head(url)
    with _api_errors("status"):
        for e in head.events(experiment):
            if format is TextFormat.json:
                sys.stdout.write(json.dumps(e) + "\n")
                sys.stdout.flush()
                continue
            details = ", ".join(f"{k}={v}" for k, v in (e.get("payload") or {}).items() if k != "metrics")
            who = e["trial_id"] or "experiment"
            out.print(f"{e['at'] or ''} #{e['seq']} {who} {e['kind']}" + (f" ({details})" if details else ""),
                      markup=False, highlight=False, soft_wrap=True)


class ResultsFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def results(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: ResultsFormat = typer.Option(ResultsFormat.table, "--format"),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated globs of metric columns, e.g. "
                                "'spatial.*,winoground.*/*' (default: all in json/csv; a table leaves out per-tag ones)."),
    paired: str = typer.Option(None, "--paired", help="A swept field: McNemar's test between trials that "
                               "differ only in it (e.g. data.train.captions)."),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Print an experiment's results: rows are trials, columns swept fields and metrics (mean ± std over
    seeds; a single trial's value with its 95% interval; n= in a header is the samples behind each value)."""
    if api_url is not None:
        with _api_errors("results"):
            text = _head(api_url).results(experiment, format.value, metrics, paired)
    else:
        from .actors import api

        patterns = [p.strip() for p in metrics.split(",") if p.strip()] if metrics else None
        with _run_errors("results"):
            text = api.results(journal or _default_journal(), experiment, format.value, patterns, paired=paired)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def report(
    experiment: str = typer.Argument(..., help="Experiment id."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write (replaced whole): index.html and PNGs."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    blobs: str = typer.Option(None, "--blobs", help=BLOBS_HELP + " Default: the one the experiment's manifest names."),
) -> None:
    """Write a static HTML report of an experiment: results table, loss and learning-rate curves, metrics
    over steps, base and final sample grids, DrawBench sheets, human grading, the manifest."""
    from .report import build_report

    with _run_errors("report"):
        index = build_report(journal or _default_journal(), experiment, out_dir, blobs_uri=blobs)
    out.print(f"wrote {index}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def cancel(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    api_url: str = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Cancel an experiment: queued trials now, running ones as their coordinator sees it."""
    if api_url is not None:
        with _api_errors("cancel"):
            counts = _head(api_url).cancel(experiment)
    else:
        from .actors import api

        with _run_errors("cancel"):
            counts = api.cancel(journal or _default_journal(), experiment)
    out.print(f"cancelled {experiment}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
def resume(
    experiment: str = typer.Argument(..., help="Experiment id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    address: str = typer.Option(None, "--address", help="Resume on a running cluster instead of embedded Ray."),
    cpus: int = typer.Option(None, "--cpus", min=1),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    restart_missing: bool = typer.Option(False, "--restart-missing", help="Train a trial from step 0 when the "
                                         "checkpoints its journal records are all gone from the blob store."),
    grace: float = typer.Option(30.0, "--grace", min=0.0, help="Seconds SIGTERM/SIGINT gives trainers to checkpoint."),
    wait: bool = WAIT_OPTION,
    metrics: bool = METRICS_OPTION,
    metrics_port: int = METRICS_PORT_OPTION,
    metrics_sd: Path = METRICS_SD_OPTION,
) -> None:
    """Finish an interrupted experiment from its journal; finished trials are not run again."""
    from .actors import api

    url = journal or _default_journal()
    with _run_errors("resume"):
        eid = api.resume(url, experiment, progress=progress, address=address, num_cpus=cpus,
                         restart_missing=restart_missing, grace_s=grace, wait=wait,
                         metrics=_metrics_options(metrics, metrics_port, metrics_sd))
        if address is None:
            text = api.results(url, eid, "table")
            failed = api.failures(url, eid)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            _exit_if_failed("resume", eid, failed)
        else:
            out.print(f"resumed {eid} on {address}")


@app.command()
def train(
    file: Path = typer.Argument(..., help="Experiment manifest (YAML)."),
    trial: str = typer.Option(..., "--trial", help="Trial id, unique id prefix, or index in plan order."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this global step (resumable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse cached VAE latents and text embeddings."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads (fixed for bitwise resume)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Run one trial of a manifest in-process, without Ray; resumes from its newest verified checkpoint."""
    import signal

    from .training import train_trial

    caught: list[int] = []  # SIGTERM/SIGINT: checkpoint at the next step boundary, then exit 128 + signal
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = train_trial(file, trial, max_steps=max_steps, progress=progress and format is TextFormat.text,
                             use_cache=cache, num_threads=threads, stop=lambda: bool(caught))
    except ManifestError as exc:
        _bad_manifest(exc, format.value, file)
    except (KeyError, FileNotFoundError, NotImplementedError, ValueError) as exc:
        err.print(f"orch train: {exc.args[0] if exc.args else exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        err.print(f"orch train: preempted by {signal.Signals(caught[0]).name} at step {result.step}, "
                  f"checkpoint {result.checkpoint}; run it again to continue", markup=False, soft_wrap=True)
        raise typer.Exit(128 + caught[0])
    if format is TextFormat.json:
        _emit_json({**dataclasses.asdict(result), "finished": result.finished})
    else:
        state = "finished" if result.finished else f"stopped at step {result.step}/{result.total_steps}"
        loss = "n/a (nothing left to run)" if result.final_loss is None else f"{result.final_loss:.4f}"
        out.print(f"[green]{state}[/]: {result.steps_run} step(s) run, loss {loss}, checkpoint {result.checkpoint}")


@app.command()
def pretrain(
    blobs: str = typer.Option(..., "--blobs", help="Blob store to cache the base in (a manifest's storage.blobs)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Shapes dataset to train on (generated if missing)."),
    steps: int = typer.Option(3000, "--steps", min=1),
    vae_steps: int = typer.Option(None, "--vae-steps", min=1),
    n: int = typer.Option(2000, "--n", min=1),
    size: int = typer.Option(32, "--size"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    lr: float = typer.Option(5e-4, "--lr", help="Denoiser learning rate."),
    ema_decay: float = typer.Option(None, "--ema-decay", help="Save an EMA of the denoiser's weights."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads (deterministic kernels)."),
    variant: str = typer.Option("sd", "--variant", help="Model variant whose tiny base to build (sd, glide_mini)."),
    init: Path = typer.Option(None, "--init", help="SD base directory to build on: its VAE kept, its denoiser "
                              "trained --steps more (or a new one, with --denoiser)."),
    denoiser: str = typer.Option(None, "--denoiser", help="SD denoiser size (tiny, small): a new U-Net and text "
                                 "encoder of that size. Default: tiny, or --init's own."),
    latent_downsample: int = typer.Option(None, "--latent-downsample", help="SD from scratch: image side / latent "
                                          "side, 4 (8x8 latent at 32 px, the default) or 2 (16x16)."),
    captions: str = typer.Option("generic", "--captions", help="Caption style to learn from: generic; described "
                                 "(every object with its size and colour); web (relation words drawn at random, "
                                 "so none is taught)."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="Shapes world: mixed (1-3 objects, look-alikes) or pairs "
                              "(two distinct objects, GenEval's position task)."),
) -> None:
    """Pretrain a variant's tiny shapes-world base on captions that teach no relation (SD: VAE, then text encoder
    and U-Net; GLIDE-mini: text transformer and U-Net, in pixel space)."""
    from .models.registry import UnknownVariant, get_variant
    from .storage import open_store
    from .training import pretrain_base, set_deterministic

    with _run_errors("pretrain"):
        try:
            prefix = get_variant(variant).INFO.tiny_base
        except (UnknownVariant, NotImplementedError) as exc:
            raise ValueError(f"--variant: {exc}") from None
        if prefix is None:
            raise ValueError(f"--variant: variant {variant!r} has no tiny shapes base to pretrain")
        if threads:
            set_deterministic(threads)
        where = pretrain_base(prefix, data_dir, steps=steps, seed=seed, n=n, size=size,
                              vae_steps=vae_steps, batch_size=batch_size, lr=lr, store=open_store(blobs),
                              ema_decay=ema_decay, variant=variant, init=init, denoiser=denoiser,
                              latent_downsample=latent_downsample, captions=captions, world=world)
    out.print(f"[green]saved[/] tiny {variant} base to {blobs} at {where}")


class SamplerName(str, Enum):
    ddim = "ddim"
    ddpm = "ddpm"


@app.command()
def sample(
    model: str = typer.Option(..., "--model", help="Diffusers directory, or a blob prefix with --blobs."),
    prompt: list[str] = typer.Option(..., "--prompt", help="Repeat for several prompts."),
    out_file: Path = typer.Option(..., "--out", help="PNG grid to write."),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding --model (e.g. trials/<id>/model)."),
    sampler: SamplerName = typer.Option(None, "--sampler", help="Default: the variant's (SD: ddim; GLIDE-mini: ddpm)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Default: the variant's (SD: 50; GLIDE-mini: 100 respaced)."),
    guidance: float = typer.Option(None, "--guidance", min=0.0,
                                   help="Classifier-free guidance scale. Default: the variant's (SD: 7.5; GLIDE-mini: 3)."),
    per_prompt: int = typer.Option(1, "--per-prompt", min=1, help="Images per prompt."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Generate images with DDIM or DDPM and classifier-free guidance; save them as a PNG grid."""

    import torch

    from .models.common.images import save_grid
    from .models.loading import load_model
    from .storage import open_store

    try:
        loaded = load_model(model, store=open_store(blobs) if blobs else None)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"orch sample: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if not loaded.generates:
        err.print(f"orch sample: {model} is a {loaded.kind} ({loaded.variant.INFO.name}); it generates no images",
                  markup=False, soft_wrap=True)
        raise typer.Exit(2)
    prompts = [p for p in prompt for _ in range(per_prompt)]
    # What is not given is the variant's own default (each samples as its reference does).
    given = {k: v for k, v in {"sampler": sampler.value if sampler else None, "steps": steps,
                               "guidance_scale": guidance}.items() if v is not None}
    images = loaded.variant.generate(loaded.model, prompts, generator=torch.Generator().manual_seed(seed), **given)
    save_grid(images, out_file, cols=per_prompt if per_prompt > 1 else None)
    how = ", ".join(f"{k} {v}" for k, v in given.items()) or f"{loaded.variant.INFO.name}'s default sampling"
    out.print(f"[green]wrote[/] {out_file}: {len(prompts)} image(s), {how}")


@app.command(name="eval")
def eval_(
    source: str = typer.Argument(None, help="The model: an exported model directory (its model_index.json names "
                                 "the variant), file:// or az:// URI, or a blob key with --blobs."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="The same as SOURCE, e.g. a blob key "
                                   "(model prefix or trials/<id>/checkpoints/step-N.pt) with --blobs."),
    suite: str = typer.Option(..., "--suite", help="Comma-separated: spatial, clip_r_precision, winoground, fid, fid_clip, "
                              "drawbench, consistency."),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding the checkpoint, caches and tiny base."),
    base: str = typer.Option(None, "--base", help="Base model of a step-N.pt checkpoint (default: the base it records)."),
    samples: int = typer.Option(64, "--samples", min=1),
    seed: int = typer.Option(1234, "--seed", min=0, help="Generation noise and protocol sampling."),
    steps: int = typer.Option(25, "--steps", min=1),
    guidance: float = typer.Option(3.0, "--guidance", min=0.0),
    sampler: SamplerName = typer.Option(SamplerName.ddim, "--sampler"),
    best_of: int = typer.Option(1, "--best-of", min=1, help="Generate K per prompt, keep the CLIP-best (needs --clip)."),
    clip: str = typer.Option(None, "--clip", help="CLIP directory or blob prefix (transformers format)."),
    fid_weights: str = typer.Option(None, "--fid-weights", help="pt_inception-2015-12-05-6726825d.pth (path or blob key)."),
    fid_reference: str = typer.Option(None, "--fid-reference", help="Reference statistics .npz (mu, sigma)."),
    winoground: str = typer.Option(None, "--winoground", help="Winoground directory (default: shapes-world pairs)."),
    drawbench: str = typer.Option(None, "--drawbench", help="DrawBench CSV (path or blob key) for the drawbench suite."),
    categories: str = typer.Option(None, "--categories", help="DrawBench categories, comma-separated "
                                   "(default: Counting,Positional, Lin & Srikanth's)."),
    per_prompt: int = typer.Option(4, "--per-prompt", min=1, help="DrawBench images per prompt (paired noise)."),
    reference_scenes: str = typer.Option("prompted", "--reference-scenes", help="FID's real images: prompted (held-out "
                                         "scenes stating a relation) or all (every held-out scene: for a chain)."),
    reference_resamples: int = typer.Option(3, "--reference-resamples", min=0, help="Bootstrap resamplings of FID's reference."),
    kid_subsets: int = typer.Option(100, "--kid-subsets", min=1),
    oracle_clip: str = typer.Option(None, "--oracle-clip", help="VCDM: the CLIP it is conditioned on; fid/fid_clip also "
                                    "score the oracle arm (images from its embeddings of held-out real images)."),
    consistency_embeddings: int = typer.Option(50, "--consistency-embeddings", min=2),
    consistency_images: int = typer.Option(4, "--consistency-images", min=2, help="Images per embedding (consistency)."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="Shapes world of the held-out prompts: mixed or pairs."),
    sheets: Path = typer.Option(None, "--sheets", help="Write the DrawBench sheets here as PNG files."),
    journal: str = typer.Option(None, "--journal", help="Record the results in this journal (with --experiment, --trial, --step)."),
    experiment: str = typer.Option(None, "--experiment"),
    trial: str = typer.Option(None, "--trial"),
    step: int = typer.Option(None, "--step", min=0),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Run evaluation suites on a checkpoint; values with sample counts and 95% intervals."""
    from dataclasses import asdict

    from .eval.inception import FIDWeightsError
    from .eval.record import record_results
    from .eval.suites import MetricUnavailable, build_context, run_in_context
    from .storage import open_store

    if (source is None) == (checkpoint is None):
        err.print("orch eval: name the model once, as SOURCE or --checkpoint", markup=False)
        raise typer.Exit(2)
    checkpoint = checkpoint or source
    if journal and not (experiment and trial and step is not None):
        err.print("orch eval: --journal needs --experiment, --trial and --step to record against", markup=False)
        raise typer.Exit(2)
    try:
        ctx = build_context(checkpoint, store=open_store(blobs) if blobs else None, base=base,
                            samples=samples, seed=seed, steps=steps, guidance_scale=guidance, sampler=sampler.value,
                            best_of=best_of, clip=clip, fid_weights=fid_weights, fid_reference=fid_reference,
                            winoground=winoground, drawbench=drawbench, drawbench_per_prompt=per_prompt,
                            reference_scenes=reference_scenes, reference_resamples=reference_resamples,
                            kid_subsets=kid_subsets, oracle_clip=oracle_clip,
                            consistency_embeddings=consistency_embeddings, consistency_images=consistency_images,
                            world=world, **({"drawbench_categories": tuple(c.strip() for c in categories.split(",") if c.strip())}
                               if categories else {}))
        results = run_in_context(ctx, suite)
    except (MetricUnavailable, FIDWeightsError, FileNotFoundError, ValueError) as exc:
        err.print(f"orch eval: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if sheets is not None:
        for r in results:
            for name, data in r.artifacts.items():
                sheets.mkdir(parents=True, exist_ok=True)
                (sheets / name).write_bytes(data)
    if journal:
        from .journal import open_journal

        with open_journal(journal) as j:
            stored = record_results(j, experiment, trial, step, results, weights=checkpoint,
                                    options=asdict(ctx.options))
        err.print(f"{'recorded' if stored else 'already recorded (kept the first)'}: evaluation of {checkpoint} "
                  f"for {trial} at step {step} in {journal}", markup=False, soft_wrap=True)
    if format is TextFormat.json:
        _emit_json([r.to_json() for r in results])
        return
    table = Table(title=f"eval of {checkpoint}")
    for col in ("suite", "metric", "value", "95% CI", "std", "n"):
        table.add_column(col)
    for r in results:
        for m in r.metrics:
            ci = "" if m.ci_low is None else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
            n = str(m.n) if m.n_reference is None else f"{m.n} vs {m.n_reference} real"
            table.add_row(r.suite, m.name, f"{m.value:.4f}", ci, "" if m.std is None else f"{m.std:.4f}", n)
    out.print(table)


clip_app = typer.Typer(help="The project's own tiny shapes-world CLIP (for CLIP-R-Precision, fid_clip, Winoground).",
                       no_args_is_help=True)
app.add_typer(clip_app, name="clip")


@clip_app.command("train")
def clip_train(
    out_to: str = typer.Option(..., "--out", help="Directory, or a blob prefix with --blobs."),
    blobs: str = typer.Option(None, "--blobs"),
    steps: int = typer.Option(3000, "--steps", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    data_seed: int = typer.Option(0, "--data-seed", min=0, help="Shapes dataset seed of its training scenes "
                                  "(a second CLIP to judge a model conditioned on the first: another seed and data)."),
    n: int = typer.Option(4000, "--n", min=2, help="Shapes scenes to train on."),
    size: int = typer.Option(32, "--size"),
    batch_size: int = typer.Option(64, "--batch-size", min=2),
    lr: float = typer.Option(2e-3, "--lr", min=0.0),
    threads: int = typer.Option(1, "--threads", min=1),
) -> None:
    """Train the tiny CLIP contrastively on shapes images and captions; saved in transformers' format."""
    import torch

    from .models.clip import train_tiny_clip
    from .storage import open_store

    torch.set_num_threads(threads)
    _, result = train_tiny_clip(out_to, steps=steps, seed=seed, n=n, size=size, batch_size=batch_size, lr=lr,
                                data_seed=data_seed, store=open_store(blobs) if blobs else None)
    out.print(f"[green]saved[/] tiny CLIP to {result.saved_to}: contrastive loss {result.first_loss:.3f} -> "
              f"{result.final_loss:.3f} in {result.steps} steps ({result.wall_s:.0f} s)")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8470, "--port", min=0, max=65535),
    address: str = typer.Option(None, "--address", help="A running Ray cluster (default: an embedded local Ray, "
                                "stopped with the server)."),
    cpus: int = typer.Option(None, "--cpus", min=1, help="CPU slots of the embedded Ray (default: all)."),
    tokens: Path = typer.Option(None, "--tokens", help="Bearer tokens, one per line (# comments); re-read when "
                                "it changes, so deleting a line revokes. Also (or instead): $ORCH_API_TOKENS."),
    data_root: list[Path] = typer.Option([], "--data-root", help="A directory submitted manifests may name "
                                         "paths under (repeatable); the state dir always may."),
    state_dir: Path = typer.Option(Path("orch-state"), "--state-dir", help="Where accepted manifests are stored "
                                   "(content-addressed) and their relative paths resolve; the default journal "
                                   "and blob store live under it (runs/)."),
    journal: str = typer.Option(None, "--journal", help="The head's journal (default: sqlite in the state dir; "
                                "PostgreSQL for a cluster)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds a client has to send a request's "
                                         "line and headers (from connecting, or from the next request's first "
                                         "byte on a kept-alive connection); then 408 and the connection closed."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", help="Seconds a client has to send the whole "
                                       "request body once its headers are in; then 408 and the connection closed."),
    keepalive: float = typer.Option(5.0, "--keepalive", help="Seconds an idle kept-alive connection stays open."),
    max_connections: int = typer.Option(256, "--max-connections", help="Open connections (or requests in "
                                        "progress) beyond which a request is answered 503."),
    sse_per_token: int = typer.Option(8, "--sse-per-token", help="Event streams (status --follow) one token may "
                                      "hold open at once; one more is answered 429."),
) -> None:
    """Serve the head's HTTP API (submit, status, results, cancel, events) until Ctrl-C."""
    from .api.server import HttpLimits, ServeOptions, check_options, serve as run_server

    limits = HttpLimits(header_timeout_s=header_timeout, body_timeout_s=body_timeout, keepalive_s=keepalive,
                        max_connections=max_connections)
    opts = ServeOptions(host=host, port=port, address=address, cpus=cpus, tokens_file=tokens,
                        data_roots=tuple(data_root), state_dir=state_dir, journal=journal,
                        sse_per_token=sse_per_token, limits=limits)
    problems = check_options(opts)
    if problems:
        for line in problems:
            err.print(f"orch serve: {line}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    with _run_errors("serve"):  # TokenError is a ValueError: exit 2, one line
        run_server(opts)


@grade_app.command("build")
def grade_build(
    experiment: list[str] = typer.Argument(..., help="Experiment id(s) whose models to compare."),
    trial: list[str] = typer.Option([], "--trial", help="A finished trial whose final model to include "
                                    "(repeatable; default: every finished trial). The base is always included."),
    drawbench: Path = typer.Option(None, "--drawbench", help="DrawBench CSV (Prompts/Prompt, Category)."),
    category: list[str] = typer.Option([], "--category", help="DrawBench categories (repeatable; default: "
                                       "Counting and Positional, as Lin & Srikanth's)."),
    shapes: int = typer.Option(None, "--shapes", min=1, help="Instead of DrawBench: N held-out shapes-world "
                               "spatial prompts."),
    samples: int = typer.Option(1, "--samples", "-k", min=1, help="Images per prompt per model."),
    seed: int = typer.Option(1234, "--seed", min=0, help="The noise every model starts from."),
    steps: int = typer.Option(25, "--steps", min=1),
    guidance: float = typer.Option(3.0, "--guidance", min=0.0),
    resolution: int = typer.Option(None, "--resolution", min=8, help="Default: each model's own."),
    blobs: str = typer.Option(None, "--blobs", help="Where the images go (default: the first experiment's store)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Generate every model's images for the prompts (same noise for all) and journal the task.
    The same task again is found, not rebuilt."""
    from .actors.grading import build
    from .eval.grading_task import Generation

    gen = Generation(samples=samples, seed=seed, steps=steps, guidance_scale=guidance, resolution=resolution)
    with _run_errors("grade build"):
        doc, created = build(journal or _default_journal(), experiment, trial_ids=trial or None,
                             drawbench=drawbench, categories=category or None, shapes=shapes, generation=gen,
                             blobs=blobs, device=device, progress=lambda line: err.print(line, markup=False))
    summary = {"task_id": doc["task_id"], "created": created, "items": len(doc["items"]), "models": doc["models"],
               "blobs": doc["blobs"]}
    if format is TextFormat.json:
        _emit_json(summary)
    else:
        out.print(f"grading task {doc['task_id']} ({'built' if created else 'already built'}): "
                  f"{len(doc['items'])} items x {len(doc['models'])} models ({', '.join(doc['models'])})",
                  markup=False, soft_wrap=True)


@grade_app.command("serve")
def grade_serve(
    task: str = typer.Argument(..., help="Grading task id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    blobs: str = typer.Option(None, "--blobs", help="Blob store holding the images (default: the task's)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8471, "--port", min=0, max=65535),
    tokens: Path = typer.Option(None, "--tokens", help="Bearer tokens file (as orch serve): a line "
                                "`TOKEN graders=NAME,...` grades as those graders."),
    grader: list[str] = typer.Option([], "--grader", help="Make a fresh token that grades as this grader only "
                                     "(kept in memory while serving) and print its link (repeatable)."),
) -> None:
    """Serve one task's grading page on its own (a laptop: uvicorn, the SQLite journal) until Ctrl-C."""
    import secrets

    from .api.auth import TokenError, TokenSource, grader_tokens, mint
    from .api.grading import create_grading_app, grading_link
    from .journal import open_journal

    url = journal or _default_journal()
    with _run_errors("grade serve"):
        if not grader and tokens is None:  # $ORCH_API_TOKENS' tokens grade as nobody
            raise TokenError("nobody could grade: give --grader NAME (a link each) or --tokens FILE with "
                             "`TOKEN graders=NAME` lines")
        links = mint(grader, lambda: secrets.token_urlsafe(24))
        with open_journal(url, create=False) as j:
            j.grading_task(task)  # an unknown task is exit 2 before anything listens
        source = TokenSource(tokens, extra=grader_tokens(links))
        store = None
        if blobs:
            from .storage import open_store

            store = open_store(blobs)
        app_ = create_grading_app(url, source, store)
    for name, token in links.items():
        out.print(grading_link(f"http://{host}:{port}", task, name, token), markup=False, soft_wrap=True)
    if not links:
        out.print(grading_link(f"http://{host}:{port}", task, "NAME", f"<a token of {tokens} with graders=NAME>"),
                  markup=False, soft_wrap=True)
    from .api.server import run_http

    run_http(app_, host, port, log_level="warning")  # the head's deadlines and security headers


@grade_app.command("link")
def grade_link(
    task: str = typer.Argument(..., help="Grading task id."),
    grader: list[str] = typer.Option(..., "--grader", help="A grader to make a link for (repeatable)."),
    tokens: Path = typer.Option(..., "--tokens", help="The head's tokens file (orch serve --tokens): a line "
                                "`TOKEN graders=NAME` is appended per grader; delete it to revoke."),
    url: str = typer.Option("http://127.0.0.1:8470", "--url", help="The head's address as graders reach it."),
) -> None:
    """Grading links for `orch serve`: a fresh token per grader that grades as that grader only. The head
    re-reads its tokens file on each request, so the links work at once."""
    import secrets

    from .api.auth import TokenError, mint, parse_tokens
    from .api.grading import grading_link

    with _run_errors("grade link"):
        links = mint(grader, lambda: secrets.token_urlsafe(24))
        try:
            fd = os.open(tokens, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # a new file: the owner's only
        except OSError as exc:
            raise TokenError(f"cannot open the tokens file {tokens}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "r+b") as f:
            text = f.read().decode("utf-8", errors="replace")
            parse_tokens(text, str(tokens))  # a broken file is not appended to
            lines = "".join(f"{token} graders={name}  # grading task {task}\n" for name, token in links.items())
            f.write((("\n" if text and not text.endswith("\n") else "") + lines).encode())
    for name, token in links.items():
        out.print(grading_link(url.rstrip("/"), task, name, token), markup=False, soft_wrap=True)


@grade_app.command("results")
def grade_results(
    task: str = typer.Argument(..., help="Grading task id."),
    journal: str = typer.Option(None, "--journal", help=JOURNAL_HELP),
    format: ResultsFormat = typer.Option(ResultsFormat.table, "--format"),
) -> None:
    """Per model: match rate (95% Wilson interval), mean rank, n; the preference matrix; Cohen's kappa."""
    from .actors.grading import results_text
    from .journal import open_journal

    with _run_errors("grade results"):
        with open_journal(journal or _default_journal(), create=False) as j:
            text = results_text(j, task, format.value)
    sys.stdout.write(text)


@data_app.command("shapes")
def data_shapes(
    out_dir: Path = typer.Option(..., "--out", help="Directory to write (created atomically)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", min=0),
    size: int = typer.Option(32, "--size", help="Image side in pixels: 32 or 64."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different dataset already there."),
    world: str = typer.Option(DEFAULT_WORLD, "--world", help="mixed (1-3 objects) or pairs (two distinct objects)."),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Generate the shapes world: images, scene graphs, captions, Winoground pairs. Same seed, same bytes."""
    from .data.shapes import IMAGE_SIZES, write_shapes_dataset

    if size not in IMAGE_SIZES:
        err.print(f"--size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {size}", markup=False)
        raise typer.Exit(2)
    try:
        summary = write_shapes_dataset(out_dir, n=n, seed=seed, size=size, overwrite=overwrite, world=world)
    except (FileExistsError, ValueError) as exc:
        err.print(f"{exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if format is TextFormat.json:
        _emit_json(summary)
    else:
        pairs = summary["winoground_examples"]
        out.print(f"[green]wrote[/] {out_dir}: {n} scenes at {size}px (seed {seed}), {pairs} Winoground pairs")


class OnError(str, Enum):
    raise_ = "raise"
    skip = "skip"


@data_app.command("gqa-captions")
def data_gqa_captions(
    scene_graphs: Path = typer.Option(..., "--scene-graphs", help="GQA *_sceneGraphs.json (streamed)."),
    questions: Path = typer.Option(..., "--questions", help="GQA questions JSON (streamed)."),
    out_uri: str = typer.Option(..., "--out", help="Blob store URI or directory for the shard dataset."),
    images: str = typer.Option(None, "--images", help="GQA images folder or blob URI; every image must exist."),
    question_types: str = typer.Option("relation,position,existence", "--question-types"),
    max_tokens: int = typer.Option(77, "--max-tokens", min=1, help="Text encoder token limit."),
    max_per_image: int = typer.Option(None, "--max-per-image", min=1),
    examples_per_shard: int = typer.Option(4096, "--examples-per-shard", min=1),
    workers: int = typer.Option(1, "--workers", min=1, help="Captioning processes (output identical for any N)."),
    on_error: OnError = typer.Option(OnError.raise_, "--on-error", help="raise, or skip and report malformed records."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a build made from other inputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    format: TextFormat = typer.Option(TextFormat.text, "--format"),
) -> None:
    """Build GQA-Captions: focused scene-graph summaries per question, as verified shards. Resumable."""
    from .data.gqa_captions import build_gqa_captions

    try:
        summary = build_gqa_captions(
            scene_graphs, questions, out_uri, question_types=[t.strip() for t in question_types.split(",") if t.strip()],
            max_tokens=max_tokens, max_per_image=max_per_image, examples_per_shard=examples_per_shard,
            images=images, on_error=on_error.value, progress=progress and format is TextFormat.text,
            overwrite=overwrite, workers=workers)
    except (ValueError, FileNotFoundError) as exc:  # DataFormatError and BuildConflictError are ValueErrors
        err.print(f"orch data gqa-captions: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if format is TextFormat.json:
        _emit_json(summary)
    else:
        out.print(f"[green]GQA-Captions[/] at {out_uri}: {summary['records']} records in {summary['shards']} shard(s), "
                  f"{summary['skipped']} skipped, {summary['records_per_s']:.0f} records/s")


metrics_app = typer.Typer(help="Prometheus metrics of a cluster node.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("serve")
def metrics_serve(
    port: int = typer.Option(9464, "--port", envvar="ORCH_METRICS_PORT", min=0, help="Port to serve /metrics on."),
    directory: Path = typer.Option(Path("/tmp/orch-metrics"), "--dir", envvar="ORCH_METRICS_DIR",
                                   help="Where this node's orch processes write their metrics."),
    host: str = typer.Option("0.0.0.0", "--host"),
) -> None:
    """Serve this node's orch metrics (run beside `ray start` on every node; Ctrl-C stops)."""
    import threading

    from .telemetry.exporter import MetricsServer

    server = MetricsServer(directory, port, host)
    out.print(f"serving {directory} on http://{host}:{server.port}/metrics")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


@journal_app.command("migrate")
def journal_migrate(url: str = typer.Argument(..., help="sqlite:///FILE or postgresql://user@host:5432/db")) -> None:
    """Create or upgrade a journal's schema to the newest migration (idempotent)."""
    from .journal import JournalError, head_revision, open_journal

    try:
        open_journal(url).close()
    except JournalError as exc:
        err.print(f"orch journal migrate: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"journal at schema revision {head_revision()}")


@blobs_app.command("ls")
def blobs_ls(
    prefix: str = typer.Argument("", help="Key prefix, e.g. experiments/<id>/grids/."),
    blobs: str = typer.Option(..., "--blobs", help=BLOBS_HELP),
) -> None:
    """Keys under a prefix, with size and sha256."""
    from .storage import open_store

    store = open_store(blobs)
    for key in store.list(prefix):
        info = store.info(key)
        out.print(f"{info.size:>12,}  {info.sha256[:12]}  {key}", markup=False, highlight=False)


@blobs_app.command("get")
def blobs_get(
    key: str = typer.Argument(..., help="Object key, e.g. experiments/<id>/grids/<trial>-final.png."),
    dest: Path = typer.Argument(..., help="File to write (atomically, after the sha256 check)."),
    blobs: str = typer.Option(..., "--blobs", help=BLOBS_HELP),
) -> None:
    """Copy one object out of the store as a plain file (local objects carry a header: use this,
    not `cp`)."""
    from .storage import open_store
    from .storage.base import BlobNotFoundError, StorageError

    try:
        info = open_store(blobs).get_file(key, dest)
    except BlobNotFoundError:
        err.print(f"orch blobs get: no object {key!r} in {blobs}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    except StorageError as exc:
        err.print(f"orch blobs get: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"{dest}: {info.size:,} bytes, sha256 {info.sha256}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
