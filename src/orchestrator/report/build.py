"""Write a report folder atomically: built in a temporary folder beside the target, then renamed
over it, so a reader sees the old report or the new one, never half of one."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from orchestrator.journal import open_journal

from .collect import ReportData, collect

log = logging.getLogger(__name__)


def _name(prefix: str, text: str) -> str:
    """A file name for `text` (a trial id, a metric, a blob key): safe characters only."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('_')}.png"


def _metrics(data: ReportData) -> list[str]:
    """Headline metrics evaluated at two or more steps (per-tag breakdowns stay in the table's JSON)."""
    steps: dict[str, set[int]] = {}
    for t in data.trials:
        for ev in t.evaluations:
            for m in ev.metrics:
                if "/" not in m:
                    steps.setdefault(m, set()).add(ev.step)
    return sorted(m for m, s in steps.items() if len(s) > 1)


def _copy_pictures(data: ReportData, store: Any, into: Path) -> tuple[dict[str, str], list[str]]:
    """The grids and sheets of each trial's base and final evaluation that the store holds:
    (blob key -> file name, the keys it does not hold)."""
    from .page import ends

    keys = {k for t in data.trials for evals in (t.evaluations, [ev for ev in t.evaluations if ev.sheets])
            for _, ev in ends(evals) for k in [ev.grid, *ev.sheets.values()] if k}
    files, missing = {}, []
    for key in sorted(keys):
        if store is None or not store.exists(key):
            missing.append(key)
            continue
        name = _name("img", key.removeprefix(f"experiments/{data.experiment_id}/grids/").removesuffix(".png"))
        store.get_file(key, into / name)
        files[key] = name
    return files, missing


def write_report(data: ReportData, out_dir: Path, store: Any = None, tallies: Sequence[Any] | None = None) -> Path:
    """Render `data` into `out_dir` (replaced whole): index.html and the PNGs beside it."""
    from . import figures
    from .page import render

    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        files, missing = _copy_pictures(data, store, tmp)
        notes = [] if not missing else [
            f"{len(missing)} picture(s) the journal names are not shown: "
            + ("no blob store was given (--blobs) and the manifest's is unknown" if store is None
               else f"not in the blob store {store!r} (e.g. {missing[0]})")]
        curves = {t.trial_id: figures.training_curves(t, tmp / _name("curves", t.trial_id)).name
                  for t in data.trials if t.steps}
        metric_plots = {m: figures.metric_over_steps(m, data.trials, tmp / _name("metric", m)).name
                        for m in _metrics(data)}
        (tmp / "index.html").write_text(render(data, files, curves, metric_plots, tallies, notes), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep the folder from whoever it is sent to
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


def build_report(journal_url: str, experiment_id: str, out_dir: str | Path, *, blobs_uri: str | None = None,
                 tallies: Sequence[Any] | None = None) -> Path:
    """Read the experiment from the journal (UnknownExperiment if absent) and its pictures from the
    blob store (`blobs_uri`; None: the one its journaled plan names), write
    the report; returns index.html's path. `tallies`: human grading (eval.grading.GradingTally);
    None: every grading task in the journal with a model of this experiment."""
    from orchestrator.eval.grading import experiment_tallies

    with open_journal(journal_url, create=False) as journal:
        data = collect(journal, experiment_id)
        if tallies is None:
            tallies = experiment_tallies(journal, experiment_id)
        store = _store(blobs_uri, journal, experiment_id)
    return write_report(data, Path(out_dir), store, tallies)


def _store(blobs_uri: str | None, journal, experiment_id: str) -> Any:
    """`blobs_uri`, else the blob store of the experiment's plan as journaled (None if unknown)."""
    from orchestrator.experiment.plan import recorded_plan
    from orchestrator.manifest import ManifestError
    from orchestrator.storage import open_store

    if blobs_uri is None:
        try:
            blobs_uri = recorded_plan(journal, experiment_id).blobs_uri
        except (LookupError, ValueError, OSError, ManifestError) as exc:  # an old journal's file gone or changed
            log.warning("no blob store for the report's pictures: %s", exc)
            return None
    return open_store(blobs_uri)
