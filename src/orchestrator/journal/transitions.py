"""Lifecycle rules: which event kinds are allowed from which status, and the status they lead to.

Trial lifecycle (`*` marks annotations that keep the status)::

    pending --queued--> queued --running--> running --evaluating--> evaluating --done--> done
                                            running --done--> done
    running, evaluating --failed--> failed --queued--> queued          (retry; attempts = #running)
    pending, queued, running, evaluating --cancelled--> cancelled --queued--> queued    (resume)
    running, evaluating --queued--> queued        (worker lost or preempted; re-run from checkpoint)
    running, queued, cancelled --stopped--> stopped   (early stopping at a rung, decided live or, for a
                                                  rung evaluated before a crash, on resume; keeps its checkpoints)
    running *rung                                 (an early-stopping decision to go on)
    running *checkpointed                         (payload step [, uri])
    running, evaluating *placed                   (a trainer process started: node, GPUs, device)
    running, evaluating, done *evaluated          (payload step, metrics; done: post-hoc evaluation)

`done` and `stopped` are terminal for the lifecycle. Anything else, e.g. done -> running or queued -> done,
raises IllegalTransition.

Experiment lifecycle::

    pending --submitted--> active --done--> done
    pending, active --cancelled--> cancelled --resumed--> active
    active --resumed--> active                    (a restarted coordinator takes over)

`pending` is the status of a registered entity with no lifecycle event yet.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition
from .events import EventKind as K


class TrialStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    EVALUATING = "evaluating"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"


class ExperimentStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    CANCELLED = "cancelled"


T = TrialStatus
TRIAL_ALLOWED: dict[TrialStatus, frozenset[K]] = {
    T.PENDING: frozenset({K.QUEUED, K.CANCELLED}),
    T.QUEUED: frozenset({K.RUNNING, K.CANCELLED, K.STOPPED}),
    T.RUNNING: frozenset(
        {K.CHECKPOINTED, K.EVALUATED, K.EVALUATING, K.WARNED, K.PREEMPTED, K.STEP_METRICS, K.PLACED, K.DONE,
         K.FAILED, K.CANCELLED, K.QUEUED, K.RUNG, K.STOPPED}
    ),
    # Step metrics travel apart from the trainer's result: the last batch may land after it.
    T.EVALUATING: frozenset({K.EVALUATED, K.WARNED, K.STEP_METRICS, K.PLACED, K.DONE, K.FAILED, K.CANCELLED,
                             K.QUEUED}),
    T.DONE: frozenset({K.EVALUATED, K.STEP_METRICS}),
    # A stopped trial's last loss curve or checkpoint row may land after the decision.
    T.STOPPED: frozenset({K.EVALUATED, K.STEP_METRICS, K.CHECKPOINTED}),
    T.FAILED: frozenset({K.QUEUED}),
    T.CANCELLED: frozenset({K.QUEUED, K.STOPPED}),
}
# Kinds absent here (checkpointed, evaluated, warned, preempted, step_metrics, placed, rung) annotate without changing
# the status:
# a preempted trial stays "running" in the journal, which `orch resume` requeues like a lost one.
TRIAL_TARGET: dict[K, TrialStatus] = {
    K.QUEUED: T.QUEUED,
    K.RUNNING: T.RUNNING,
    K.EVALUATING: T.EVALUATING,
    K.DONE: T.DONE,
    K.FAILED: T.FAILED,
    K.CANCELLED: T.CANCELLED,
    K.STOPPED: T.STOPPED,
}

E = ExperimentStatus
EXPERIMENT_ALLOWED: dict[ExperimentStatus, frozenset[K]] = {
    E.PENDING: frozenset({K.SUBMITTED, K.CANCELLED}),
    E.ACTIVE: frozenset({K.DONE, K.CANCELLED, K.RESUMED}),
    E.CANCELLED: frozenset({K.RESUMED}),
    E.DONE: frozenset(),
}
EXPERIMENT_TARGET: dict[K, ExperimentStatus] = {
    K.SUBMITTED: E.ACTIVE,
    K.RESUMED: E.ACTIVE,
    K.CANCELLED: E.CANCELLED,
    K.DONE: E.DONE,
}


def trial_status_after(status: TrialStatus, kind: K) -> TrialStatus:
    """The status a trial event leads to, without checking that it is allowed (used by folds)."""
    return TRIAL_TARGET.get(kind, status)


def experiment_status_after(status: ExperimentStatus, kind: K) -> ExperimentStatus:
    return EXPERIMENT_TARGET.get(kind, status)


def check_trial_transition(status: TrialStatus, kind: K, what: str) -> TrialStatus:
    """Return the next status, or raise IllegalTransition naming `what` and the allowed kinds."""
    allowed = TRIAL_ALLOWED[status]
    if kind not in allowed:
        raise IllegalTransition(
            f"{what}: trial is '{status.value}', which allows only "
            f"{', '.join(sorted(allowed)) or 'no events'}; refusing '{kind.value}'"
        )
    return trial_status_after(status, kind)


def check_experiment_transition(status: ExperimentStatus, kind: K, what: str) -> ExperimentStatus:
    allowed = EXPERIMENT_ALLOWED[status]
    if kind not in allowed:
        raise IllegalTransition(
            f"{what}: experiment is '{status.value}', which allows only "
            f"{', '.join(sorted(allowed)) or 'no events'}; refusing '{kind.value}'"
        )
    return experiment_status_after(status, kind)


# Kinds that change a status: the journal finds an entity's current status from the newest one.
TRIAL_STATUS_KINDS: frozenset[K] = frozenset(TRIAL_TARGET)
EXPERIMENT_STATUS_KINDS: frozenset[K] = frozenset(EXPERIMENT_TARGET)
