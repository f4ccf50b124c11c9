"""Human evaluation, end to end: build a grading task from experiments' models, tally its grades.

`build` picks the models (each experiment's base and the final model of its finished trials, or
the trials named), the prompts (a DrawBench CSV filtered by category, or the shapes world's
held-out spatial prompts), generates through eval/grading_task.py and journals the task. The
grading page is api/grading.py; the tallies' arithmetic is eval/grading.py.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.eval.grading import GradingTally, agreement, tally
from orchestrator.eval.grading_task import (
    Generation,
    GradingPrompt,
    ModelChoice,
    build_task,
    shapes_prompts,
    task_content,
    task_id_of,
)
from orchestrator.experiment.plan import recorded_plan
from orchestrator.journal import EventKind, TrialStatus, open_journal
from orchestrator.manifest import ManifestError
from orchestrator.manifest.sweep import canonical_json

SEED_PAPER_CATEGORIES = ("Counting", "Positional")


class GradingInputError(ValueError):
    """Bad input to a grading command (exit 2)."""


def drawbench_prompts(csv_path: str | Path, categories: Sequence[str] | None) -> tuple[list[GradingPrompt], dict]:
    """DrawBench's prompts of `categories` (default: Lin & Srikanth's Counting and Positional)."""
    from orchestrator.data.loaders.drawbench import DrawBenchLoader

    cats = list(categories) if categories else list(SEED_PAPER_CATEGORIES)
    # Lin & Srikanth's pair is a default: a sheet with only one of them is fine; a named one must be there.
    loader = DrawBenchLoader(str(csv_path), categories=categories or None, default_categories=SEED_PAPER_CATEGORIES)
    prompts = [GradingPrompt(p.prompt, p.category) for p in loader]
    if not prompts:  # the loader refuses unknown categories; this catches a filter that still selects nothing
        raise GradingInputError(f"{csv_path}: categories {cats} select no prompt")
    return prompts, {"source": "drawbench", "file": Path(csv_path).name, "categories": cats}


def choose_models(journal: Any, experiment_ids: Sequence[str], trial_ids: Sequence[str] | None,
                  with_base: bool = True) -> tuple[list[ModelChoice], str]:
    """Each experiment's base(s) and the final models of the chosen finished trials (default: all
    finished ones), and the first experiment's blob store (where the task's images go)."""
    from orchestrator.models.loading import load_model
    from orchestrator.storage import open_store

    choices: dict[str, ModelChoice] = {}
    bases: dict[str, tuple[str, str, Callable]] = {}  # model spec -> (experiment, trial, loader)
    first_blobs, wanted = None, set(trial_ids or ())
    found: set[str] = set()
    for eid in experiment_ids:
        state = journal.experiment_state(eid)  # UnknownExperiment: exit 2
        try:  # the plan as journaled: the manifest file may have changed or gone since
            plan = recorded_plan(journal, eid)
        except (LookupError, ValueError, OSError, ManifestError) as exc:  # an old journal whose file is gone or changed
            raise GradingInputError(f"experiment {eid}: {exc}") from None
        store = open_store(plan.blobs_uri)
        first_blobs = first_blobs or plan.blobs_uri
        for trial in plan.trials:
            t = state.trials.get(trial.id)
            if t is None or (wanted and trial.id not in wanted):
                continue
            found.add(trial.id)
            if t.status is not TrialStatus.DONE:
                if wanted:
                    raise GradingInputError(f"trial {trial.id} of {eid} has not finished ({t.status.value})")
                continue
            done = journal.events(eid, trial.id, kinds=[EventKind.DONE])
            prefix = done[-1].payload.get("model") if done else None
            if not prefix:
                raise GradingInputError(f"trial {trial.id} of {eid} records no exported model")
            spec, base_dir = trial.manifest.model, plan.base_dir
            bases.setdefault(canonical_json(spec.model_dump(mode="json")), (
                eid, trial.id, lambda device, spec=spec, store=store, base_dir=base_dir:
                load_model(None, spec=spec, store=store, base_dir=base_dir, device=device)))
            choices.setdefault(trial.id, ModelChoice(trial.id, {"kind": "final", "experiment": eid,
                                                                "trial": trial.id, "model": prefix},
                                                     lambda device, p=prefix, store=store:
                                                     load_model(p, store=store, device=device)))
    missing = sorted(wanted - found)
    if missing:
        raise GradingInputError(f"no trial {', '.join(missing)} in experiment(s) {', '.join(experiment_ids)}")
    if not choices:
        raise GradingInputError(f"experiment(s) {', '.join(experiment_ids)} have no finished trial to grade")
    base_choices = [ModelChoice("base" if len(bases) == 1 else f"base:{tid}",
                                {"kind": "base", "experiment": eid, "trial": tid}, load)
                    for eid, tid, load in bases.values()] if with_base else []
    return base_choices + list(choices.values()), first_blobs


def build(journal_url: str, experiment_ids: Sequence[str], *, trial_ids: Sequence[str] | None = None,
          drawbench: str | Path | None = None, categories: Sequence[str] | None = None, shapes: int | None = None,
          generation: Generation = Generation(), blobs: str | None = None, device: str | None = None,
          progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Build (or find) the task; (its document, whether this call created it)."""
    from orchestrator.storage import open_store

    if (drawbench is None) == (shapes is None):
        raise GradingInputError("give the prompts: --drawbench CSV (with --category) or --shapes N")
    if drawbench is not None:
        if not Path(drawbench).exists():
            raise GradingInputError(f"no DrawBench CSV at {drawbench}")
        prompts, source = drawbench_prompts(drawbench, categories)
    else:
        prompts, source = shapes_prompts(shapes), {"source": "shapes-heldout", "n": shapes}
    with open_journal(journal_url, create=False) as journal:
        models, first_blobs = choose_models(journal, experiment_ids, trial_ids)
        blobs = blobs or first_blobs
        content = task_content(models, prompts, source, generation)
        task_id = task_id_of(content)
        if task_id in journal.grading_task_ids():
            return journal.grading_task(task_id), False
        document = build_task(content, models, open_store(blobs), blobs, device=device, progress=progress)
        created = journal.register_grading_task(task_id, content["experiments"], document)
        return document, created


def results_text(journal: Any, task_id: str, fmt: str) -> str:
    """`orch grade results`: the task's tally and the graders' agreement, rendered."""
    models = journal.grading_task(task_id)["models"]  # UnknownGradingTask: exit 2 / 404
    grades = journal.grades(task_id)
    return render_results(tally(task_id, models, grades), agreement(models, grades), fmt)


def render_results(t: GradingTally, agree: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({**asdict(t), "agreement": asdict(agree)}, indent=2)
    if fmt == "csv":  # one row per model: its numbers, then how often it ranked above each other model
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["model", "n", "match_rate", "ci_low", "ci_high", "mean_rank"] + [f"above_{m}" for m in t.models])
        for row, prefs in zip(t.rows, t.preference):
            w.writerow([row["model"], row["n"]] + [_num(row[k]) for k in ("match_rate", "ci_low", "ci_high",
                                                                         "mean_rank")] + [_num(p) for p in prefs])
        return out.getvalue()
    if fmt != "table":
        raise GradingInputError(f"unknown format {fmt!r}: use table, json or csv")
    width = max(len(m) for m in t.models)
    lines = [f"grading task {t.task_id}: graders {', '.join(t.graders) or '(none yet)'}", "",
             f"{'model':<{width}}  {'n':>4}  {'match':>6}  {'95% CI':<15}  {'mean rank':>9}"]
    for r in t.rows:
        ci = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if r["n"] else "-"
        lines.append(f"{r['model']:<{width}}  {r['n']:>4}  {_num(r['match_rate']):>6}  {ci:<15}  "
                     f"{_num(r['mean_rank']):>9}")
    lines += ["", "preference (row ranked above column, fraction of grades):",
              " " * width + "  " + "  ".join(f"{m[:8]:>8}" for m in t.models)]
    for m, prefs in zip(t.models, t.preference):
        lines.append(f"{m:<{width}}  " + "  ".join(f"{_num(p) if p is not None else '-':>8}" for p in prefs))
    kappa = "n/a" if agree.kappa is None else f"{agree.kappa:.3f}"
    lines += ["", f"agreement: Cohen's kappa {kappa} on match labels (n = {agree.items} items graded by two "
                  f"graders, {agree.labels} labels, {agree.pairs} grader pair(s))"]
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"
