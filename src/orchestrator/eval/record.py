"""The one writer of a trial's `evaluated` event, for `orch eval --journal` and the Evaluator alike.

The idempotency key names what was judged and how: experiment, trial, step, the weights (a
checkpoint key, a model prefix or "base") and a digest of the suites and options. So a retried
or repeated evaluation (a resumed sweep re-evaluating the same checkpoint, a second `orch eval`
with the same flags) keeps the first record, while an evaluation with other options is a new one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Sequence

from orchestrator.journal import Event, EventKind, JournalConflict

from .results import SuiteResult, flatten_metrics, jsonable

log = logging.getLogger(__name__)


def evaluation_key(experiment_id: str, trial_id: str, step: int, weights: str, suites: Sequence[str],
                   options: dict[str, Any]) -> str:
    how = json.dumps({"suites": list(suites), "options": jsonable(options)}, sort_keys=True)
    return f"{experiment_id}/{trial_id}/evaluated/{step}/{weights}/{hashlib.sha256(how.encode()).hexdigest()[:16]}"


def evaluation_id(key: str) -> str:
    """The short id `orch eval list/diff/rerun` name an evaluation by: 12 hex of its key's sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def record_evaluation(journal: Any, experiment_id: str, trial_id: str, step: int, *, metrics: dict[str, float],
                      suites: Sequence[str], options: dict[str, Any], weights: str,
                      info: dict[str, Any] | None = None, **extra: Any) -> bool:
    """Append the event; True if stored, False if this evaluation was already recorded (the first
    record is kept: a re-run differs only in timings)."""
    key = evaluation_key(experiment_id, trial_id, step, weights, suites, options)
    event = Event.for_trial(experiment_id, trial_id, EventKind.EVALUATED, key, step=int(step), metrics=metrics,
                            suites=list(suites), weights=weights, info=jsonable(info or {}),
                            options=jsonable(options), eval_id=evaluation_id(key), **extra)
    try:
        return journal.append(event)
    except JournalConflict as exc:
        log.warning("keeping the first evaluation of %s at step %d (%s): %s", trial_id, step, weights, exc)
        return False


def record_results(journal: Any, experiment_id: str, trial_id: str, step: int, results: Sequence[SuiteResult],
                   *, weights: str, options: dict[str, Any], receipt: dict[str, Any] | None = None) -> bool:
    """`record_evaluation` for suite results as `run_suites` returns them, with their receipt
    (receipt.make_receipt) where the caller has one."""
    return record_evaluation(journal, experiment_id, trial_id, step, metrics=flatten_metrics(results),
                             suites=[r.suite for r in results], options=options, weights=weights,
                             info={r.suite: {**r.info, "wall_s": round(r.wall_s, 3)} for r in results},
                             receipt=jsonable(receipt or {}))
