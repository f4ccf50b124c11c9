"""Recorded evaluations as `orch eval list/diff/rerun` read them: each `evaluated` event by its id
(eval/record.py evaluation_id), what differs between two (eval/receipt.py diff), and a rerun that
loads the same weights with the same options and compares every value bit for bit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from orchestrator.journal import EventKind, open_journal


@dataclass
class Recorded:
    eval_id: str
    experiment_id: str
    trial_id: str
    step: int
    payload: dict[str, Any]


def _recorded(journal, experiment_id: str | None = None) -> list[Recorded]:
    out = []
    for e in journal.events(experiment_id, kinds=[EventKind.EVALUATED]):
        p = e.payload
        if p.get("eval_id"):
            out.append(Recorded(p["eval_id"], e.experiment_id, e.trial_id, int(p.get("step", 0)), p))
    return out


def list_evaluations(journal_url: str, experiment_id: str | None = None) -> list[Recorded]:
    """Every evaluation recorded with an id (those before ids were recorded are not listed)."""
    with open_journal(journal_url, create=False) as journal:
        return _recorded(journal, experiment_id)


def find(journal, eval_id: str) -> Recorded:
    """The evaluation whose id starts with `eval_id` (a unique prefix serves)."""
    hits = [r for r in _recorded(journal) if r.eval_id.startswith(eval_id)]
    if not hits:
        raise LookupError(f"no evaluation {eval_id!r} in the journal (orch eval list shows their ids)")
    if len({r.eval_id for r in hits}) > 1:
        raise LookupError(f"{eval_id!r} names {len(hits)} evaluations: give more of the id")
    return hits[0]


def diff_evaluations(journal_url: str, a: str, b: str) -> dict[str, Any]:
    """What differs between two evaluations: in what they ran with (receipt, options, suites: each
    field with what it can move) and in their values (the metrics both report)."""
    from orchestrator.eval.receipt import diff

    with open_journal(journal_url, create=False) as journal:
        ra, rb = find(journal, a), find(journal, b)
    ma, mb = ra.payload.get("metrics") or {}, rb.payload.get("metrics") or {}
    return {"a": ra.eval_id, "b": rb.eval_id,
            "ran_with": [{"field": f, "a": x, "b": y, "can_move": m} for f, x, y, m in diff(ra.payload, rb.payload)],
            "values": [{"metric": k, "a": ma[k], "b": mb[k]} for k in sorted(set(ma) & set(mb)) if ma[k] != mb[k]]}


@dataclass
class Rerun:
    eval_id: str
    compared: int                                   # values compared (metrics and per-sample outcomes)
    differences: list[dict[str, Any]] = field(default_factory=list)
    ran_with: list[dict[str, Any]] = field(default_factory=list)  # receipt fields that differ this time

    @property
    def identical(self) -> bool:
        return not self.differences


def rerun_evaluation(journal_url: str, eval_id: str, blobs_uri: str | None = None) -> Rerun:
    """Run a recorded evaluation again: its weights (by the location it recorded, from `blobs_uri` or
    the experiment's blob store), its options and suites, the thread count it ran with; compare every
    metric and every per-sample outcome with the record, exactly."""
    import torch

    from orchestrator.eval.options import EvalOptions
    from orchestrator.eval.receipt import diff, make_receipt
    from orchestrator.eval.results import OUTCOMES, flatten_metrics, jsonable
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.loading import load_model
    from orchestrator.storage import open_store

    with open_journal(journal_url, create=False) as journal:
        rec = find(journal, eval_id)
        plan = _plan(journal, rec.experiment_id)
    p = rec.payload
    if not p.get("options"):
        raise ValueError(f"evaluation {rec.eval_id} recorded no options: it predates rerunnable records")
    known = {f.name for f in fields(EvalOptions)}
    options = EvalOptions(**{k: v for k, v in p["options"].items() if k in known})
    blobs_uri = blobs_uri or (plan.blobs_uri if plan is not None else None)
    store = open_store(blobs_uri) if blobs_uri else None
    threads = ((p.get("receipt") or {}).get("runtime") or {}).get("threads")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # float sums in another order would differ in the last bits
    try:
        weights = p["weights"]
        if weights == "base":
            if plan is None:
                raise ValueError(f"evaluation {rec.eval_id} judged a base model, and experiment "
                                 f"{rec.experiment_id} records no plan to read its model section from")
            trial = plan.trial(rec.trial_id)
            model = load_model(None, spec=trial.manifest.model, store=store, base_dir=trial.base_dir,
                               device=options.device or "cpu")
        else:
            model = load_model(weights, store=store, device=options.device or "cpu")
        ctx = build_context(None, store=store, options=options, model=model)
        results = run_in_context(ctx, p["suites"])
        receipt = jsonable(make_receipt(ctx, results))
    finally:
        torch.set_num_threads(before)
    now = flatten_metrics(results)
    then = p.get("metrics") or {}
    differences = [{"what": k, "recorded": then.get(k), "now": now.get(k)}
                   for k in sorted(set(then) | set(now)) if json.dumps(then.get(k)) != json.dumps(now.get(k))]
    compared = len(set(then) | set(now))
    info = p.get("info") or {}
    for r in results:
        recorded = (info.get(r.suite) or {}).get(OUTCOMES) or {}
        fresh = jsonable(r.info.get(OUTCOMES) or {})
        for name in sorted(set(recorded) | set(fresh)):
            compared += 1
            if recorded.get(name) != fresh.get(name):
                differences.append({"what": f"{r.suite} outcomes {name}", "recorded": "(per sample)",
                                    "now": "differs"})
    ran_with = [{"field": f, "recorded": x, "now": y, "can_move": m}
                for f, x, y, m in diff(p, {**p, "receipt": receipt})]
    return Rerun(rec.eval_id, compared, differences, ran_with)


def _plan(journal, experiment_id: str):
    from orchestrator.experiment.plan import recorded_plan
    from orchestrator.journal import UnknownExperiment

    try:
        return recorded_plan(journal, experiment_id)
    except (UnknownExperiment, LookupError, ValueError, OSError):
        return None  # evaluations recorded by `orch eval --journal` alone: the weights name themselves
