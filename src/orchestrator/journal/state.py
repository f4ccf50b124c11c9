"""Read models: the current state of trials and experiments as a pure fold over their events.

Nothing here touches the database, so a restarted coordinator and the unit tests compute state
the same way: `fold_trial(...)` and `fold_experiment(...)` of the same events give the same state.
The fold trusts the journal's append-time checks and does not re-validate transitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .events import Event, EventKind
from .transitions import ExperimentStatus, TrialStatus, experiment_status_after, trial_status_after


@dataclass
class TrialState:
    experiment_id: str
    trial_id: str
    config: dict[str, Any] | None = None
    status: TrialStatus = TrialStatus.PENDING
    attempts: int = 0  # number of `running` events
    last_checkpoint_step: int | None = None  # highest checkpointed step: where a re-run resumes
    last_checkpoint_uri: str | None = None
    last_error: str | None = None  # kept after a successful retry, for the record
    last_traceback: str | None = None
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> {metric: value}
    last_seq: int | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in (TrialStatus.DONE, TrialStatus.FAILED, TrialStatus.CANCELLED, TrialStatus.STOPPED)

    def latest_metrics(self) -> dict[str, float]:
        """Metrics of the highest evaluated step, or {} when never evaluated."""
        return dict(self.metrics[max(self.metrics)]) if self.metrics else {}


@dataclass
class ExperimentState:
    experiment_id: str
    name: str
    manifest: str
    created_at: datetime | None = None
    status: ExperimentStatus = ExperimentStatus.PENDING
    trials: dict[str, TrialState] = field(default_factory=dict)
    last_seq: int | None = None
    updated_at: datetime | None = None

    def counts(self) -> dict[TrialStatus, int]:
        """Number of trials in each status (every status present, zero included)."""
        result = {status: 0 for status in TrialStatus}
        for trial in self.trials.values():
            result[trial.status] += 1
        return result


def apply_trial_event(state: TrialState, event: Event) -> None:
    """Advance `state` by one event of the same trial (the fold's step; mutates `state`)."""
    if (event.experiment_id, event.trial_id) != (state.experiment_id, state.trial_id):
        raise ValueError(f"{event.describe()} does not belong to trial {state.trial_id}")
    payload = event.payload
    state.status = trial_status_after(state.status, event.kind)
    if event.kind is EventKind.RUNNING:
        state.attempts += 1
    elif event.kind is EventKind.CHECKPOINTED:
        step = payload["step"]
        if state.last_checkpoint_step is None or step >= state.last_checkpoint_step:
            state.last_checkpoint_step = step
            state.last_checkpoint_uri = payload.get("uri", state.last_checkpoint_uri)
    elif event.kind is EventKind.EVALUATED:
        state.metrics.setdefault(payload["step"], {}).update(payload["metrics"])
    elif event.kind is EventKind.FAILED:
        state.last_error = payload["error"]
        state.last_traceback = payload.get("traceback")
    state.last_seq = event.seq if event.seq is not None else state.last_seq
    state.updated_at = event.created_at or state.updated_at


def fold_trial(
    experiment_id: str, trial_id: str, events: Iterable[Event], config: Mapping[str, Any] | None = None
) -> TrialState:
    """The state of one trial after `events` (in journal order)."""
    state = TrialState(experiment_id, trial_id, dict(config) if config is not None else None)
    for event in events:
        apply_trial_event(state, event)
    return state


def fold_experiment(
    experiment_id: str,
    name: str,
    manifest: str,
    events: Iterable[Event],
    trial_configs: Mapping[str, Mapping[str, Any]] | None = None,
    created_at: datetime | None = None,
) -> ExperimentState:
    """The state of an experiment and all its trials after `events` (in journal order).

    Every trial in `trial_configs` appears, pending if it has no events yet.
    """
    state = ExperimentState(experiment_id, name, manifest, created_at)
    for trial_id, config in (trial_configs or {}).items():
        state.trials[trial_id] = TrialState(experiment_id, trial_id, dict(config))
    for event in events:
        if event.experiment_id != experiment_id:
            raise ValueError(f"{event.describe()} does not belong to experiment {experiment_id}")
        if event.trial_id is None:
            state.status = experiment_status_after(state.status, event.kind)
        else:
            trial = state.trials.get(event.trial_id)
            if trial is None:
                trial = state.trials[event.trial_id] = TrialState(experiment_id, event.trial_id)
            apply_trial_event(trial, event)
        state.last_seq = event.seq if event.seq is not None else state.last_seq
        state.updated_at = event.created_at or state.updated_at
    return state
