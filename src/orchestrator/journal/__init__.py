"""The journal: a durable, append-only event store for experiments and trials.

Every state change is an Event with an idempotency key; the current state of an experiment or
trial is a fold over its events (state.py), so a restarted coordinator rebuilds itself from the
journal alone. SQLite by default, PostgreSQL for a cluster head.

    journal = open_journal("sqlite:///runs/journal.db")
    journal.register_experiment("exp1", "sd-spatial", manifest_yaml)
    journal.register_trial("exp1", "t-3f2a", {"train.lr": 1e-4})
    journal.append(Event.for_trial("exp1", "t-3f2a", "queued", "t-3f2a/queued/1"))
    journal.trial_state("t-3f2a").status  # TrialStatus.QUEUED
"""

from .checkpoints import Checkpoint
from .errors import (
    AmbiguousTrial,
    IllegalTransition,
    InvalidEvent,
    JournalConflict,
    JournalError,
    JournalLocationError,
    SchemaError,
    UnknownExperiment,
    UnknownTrial,
)
from .events import EXPERIMENT_KINDS, TRIAL_KINDS, Event, EventKind
from .grading import Grade, UnknownGradingTask
from .lease import Holder, Lease, LeaseHeld, LeaseLost
from .migrate import current_revision, head_revision
from .state import ExperimentState, TrialState, apply_trial_event, fold_experiment, fold_trial
from .store import Journal, open_journal
from .transitions import EXPERIMENT_ALLOWED, TRIAL_ALLOWED, ExperimentStatus, TrialStatus

__all__ = [
    "EXPERIMENT_ALLOWED",
    "EXPERIMENT_KINDS",
    "TRIAL_ALLOWED",
    "TRIAL_KINDS",
    "AmbiguousTrial",
    "Checkpoint",
    "Event",
    "EventKind",
    "ExperimentState",
    "ExperimentStatus",
    "IllegalTransition",
    "InvalidEvent",
    "Journal",
    "JournalConflict",
    "JournalError",
    "JournalLocationError",
    "Grade",
    "Holder",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "SchemaError",
    "TrialState",
    "TrialStatus",
    "UnknownExperiment",
    "UnknownGradingTask",
    "UnknownTrial",
    "apply_trial_event",
    "current_revision",
    "fold_experiment",
    "fold_trial",
    "head_revision",
    "open_journal",
]
