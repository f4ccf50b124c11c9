"""Journal writes of the runtime, with deterministic idempotency keys.

A status change is keyed by the trial's newest journal seq it follows from, so a coordinator
that crashes between writing and acknowledging, or two coordinators racing, re-append the same
key and the journal keeps one event; annotations are keyed by what they annotate (the step).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from orchestrator.journal import Event, EventKind, IllegalTransition, Journal, JournalConflict, TrialState
from orchestrator.journal.events import MAX_KEY_LENGTH

log = logging.getLogger(__name__)


class RunJournal:
    def __init__(self, journal: Journal, experiment_id: str):
        self.journal, self.eid = journal, experiment_id

    def trial(self, trial_id: str) -> TrialState:
        return self.journal.trial_state(trial_id, self.eid)

    def transition(self, trial_id: str, kind: EventKind, **payload: Any) -> bool:
        """A status change of a trial, keyed by the seq it follows from."""
        after = self.trial(trial_id).last_seq
        key = f"{self.eid}/{trial_id}/{kind.value}/after-{after if after is not None else 'none'}"
        return self.journal.append(Event.for_trial(self.eid, trial_id, kind, key, **payload))

    def transition_all(self, trials: dict[str, int | None], kind: EventKind) -> list[bool]:
        """The same status change for many trials in one transaction (a sweep's `queued`), each
        keyed exactly as `transition` keys it; `trials` maps trial id -> the seq it follows from."""
        def key(tid: str, after: int | None) -> str:
            return f"{self.eid}/{tid}/{kind.value}/after-{after if after is not None else 'none'}"

        return self.journal.append_many(Event.for_trial(self.eid, tid, kind, key(tid, after))
                                        for tid, after in trials.items())

    def checkpointed(self, trial_id: str, step: int, uri: str, sha256: str, size: int) -> bool:
        """Index and journal a landed checkpoint; False when it was already (a resume reports the
        checkpoint it started from again, in case the killed process never did)."""
        try:
            new = self.journal.record_checkpoint(trial_id, step, uri, sha256, size)
        except JournalConflict as exc:  # rewritten with other bytes (e.g. another thread count): keep the first
            log.warning("%s", exc)
            new = False
        key = f"{self.eid}/{trial_id}/checkpointed/{step}"
        self._annotate(Event.for_trial(self.eid, trial_id, EventKind.CHECKPOINTED, key, step=step, uri=uri))
        return new

    def evaluated(self, trial_id: str, step: int, out: dict, **extra: Any) -> None:
        """What the Evaluator returned, through the one writer of `evaluated` events (a re-evaluation
        after a resume, same weights and options, keeps the first record)."""
        from orchestrator.eval.record import record_evaluation

        try:
            record_evaluation(self.journal, self.eid, trial_id, step, metrics=out["metrics"], suites=out["suites"],
                              options=out["options"], weights=out["weights"], info=out["info"], grid=out["grid"],
                              receipt=out.get("receipt") or {}, **extra)
        except IllegalTransition as exc:  # e.g. a late report about an attempt already requeued
            log.warning("dropping the evaluation of %s at step %d: %s", trial_id, step, exc)

    def step_metrics(self, trial_id: str, points: list[list[float]]) -> None:
        """Loss and learning rate per step ([step, loss, lr] rows), keyed by the steps they cover."""
        from orchestrator.eval.results import jsonable

        cols = jsonable({"steps": [int(p[0]) for p in points], "loss": [p[1] for p in points],
                         "lr": [p[2] for p in points]})
        key = (f"{self.eid}/{trial_id}/step_metrics/{cols['steps'][0]}-{cols['steps'][-1]}"
               f"/attempt-{self.trial(trial_id).attempts}")
        try:
            self._annotate(Event.for_trial(self.eid, trial_id, EventKind.STEP_METRICS, key, **cols))
        except JournalConflict as exc:  # the same steps again with other bits (a replay): keep the first
            log.warning("%s", exc)

    def preempted(self, trial_id: str, step: int, checkpoint: str | None) -> None:
        key = f"{self.eid}/{trial_id}/preempted/{step}/attempt-{self.trial(trial_id).attempts}"
        self._annotate(Event.for_trial(self.eid, trial_id, EventKind.PREEMPTED, key, step=step,
                                       checkpoint=checkpoint))

    def warned(self, trial_id: str, kind: str, details: dict) -> None:
        """A fallback, keyed by what it is about (the same skip reported twice is one event).

        Never raises: it runs inside the coordinator's `on_notice`, a call nobody awaits, which
        prints the notice only after this returns; a notice the journal refuses is logged instead."""
        try:
            about = details.get("key") or details.get("expected_step") or ""
            key = f"{self.eid}/{trial_id}/warned/{kind}/{about}/attempt-{self.trial(trial_id).attempts}"
            if len(key) > MAX_KEY_LENGTH:  # a long blob prefix: the same key, shortened by its hash
                key = f"{key[:MAX_KEY_LENGTH - 17]}/{hashlib.sha256(key.encode()).hexdigest()[:16]}"
            # The payload as a dict: details may hold a `key` (checkpoint_skipped), for_trial's own argument.
            self._annotate(Event(self.eid, EventKind.WARNED, key, trial_id, {"notice": kind, **details}))
        except Exception as exc:  # noqa: BLE001 - the console must still hear of the fallback
            log.error("could not journal the %s notice of %s (%s): %s", kind, trial_id, details, exc)

    def placed(self, trial_id: str, where: dict) -> None:
        """Where a trainer process of the trial started (a Ray restart on another node is a second
        one), keyed by that process: the same report twice is one event."""
        who = f"{where.get('node_id', '')[:16]}/{where.get('pid')}/rank-{where.get('rank', 0)}"
        key = f"{self.eid}/{trial_id}/placed/attempt-{self.trial(trial_id).attempts}/{who}"
        self._annotate(Event.for_trial(self.eid, trial_id, EventKind.PLACED, key, **where))

    def decided(self, trial_id: str, decision: dict[str, Any]) -> bool:
        """An early-stopping decision at a rung (experiment/early_stop.py): `rung` to go on, the
        `stopped` transition to stop; either keyed by the rung, so it is journaled once."""
        payload = {k: v for k, v in decision.items() if k != "trial_id"}  # the event names its trial
        if decision["stop"]:
            return self.transition(trial_id, EventKind.STOPPED, **payload)
        key = f"{self.eid}/{trial_id}/rung/{decision['step']}"
        try:
            return self.journal.append(Event.for_trial(self.eid, trial_id, EventKind.RUNG, key, **payload))
        except IllegalTransition as exc:  # no longer running (cancelled meanwhile): nothing to decide
            log.warning("dropping the rung decision of %s at step %d: %s", trial_id, decision["step"], exc)
            return False

    def _annotate(self, event: Event) -> None:
        try:
            self.journal.append(event)
        except IllegalTransition as exc:  # e.g. a late report about an attempt already requeued
            log.warning("dropping %s: %s", event.describe(), exc)

    def experiment(self, kind: EventKind, suffix: str = "", **payload: Any) -> bool:
        key = f"{self.eid}/{kind.value}{suffix}"
        return self.journal.append(Event.for_experiment(self.eid, kind, key, **payload))
