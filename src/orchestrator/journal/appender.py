"""Appending a batch of events inside a write transaction (the caller holds the write lock).

Per batch: one query for the keys already stored, one probe per distinct entity (registered?
newest status?), one multi-row INSERT. Each event is checked against the status left by the
events before it, so a batch may walk a trial through several states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from sqlalchemy import Connection, select

from .engine import insert_for
from .errors import JournalConflict, JournalError, UnknownExperiment, UnknownTrial
from .events import Event, EventKind
from .schema import events as events_t
from .schema import experiments as experiments_t
from .schema import trials as trials_t
from .schema import utcnow
from .transitions import (
    EXPERIMENT_STATUS_KINDS,
    TRIAL_STATUS_KINDS,
    ExperimentStatus,
    TrialStatus,
    check_experiment_transition,
    check_trial_transition,
    experiment_status_after,
    trial_status_after,
)

CHUNK = 500  # rows or keys per statement: well under SQLite's and PostgreSQL's bind-parameter limits

_Status = TrialStatus | ExperimentStatus
_Entity = tuple[str, str | None]  # (experiment_id, trial_id or None for the experiment itself)


def append_batch(conn: Connection, batch: Sequence[Event]) -> list[bool]:
    """Store the new events of `batch`; per event, True when stored and False when a duplicate."""
    known = stored_by_key(conn, [event.idempotency_key for event in batch])
    statuses: dict[_Entity, _Status] = {}
    results: list[bool] = []
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for event in batch:
        prior = known.get(event.idempotency_key)
        if prior is not None:
            results.append(same_or_conflict(prior, event))
            continue
        entity = (event.experiment_id, event.trial_id)
        status = statuses[entity] if entity in statuses else _probe_status(conn, event)
        if isinstance(status, TrialStatus):
            statuses[entity] = check_trial_transition(status, event.kind, event.describe())
        else:
            statuses[entity] = check_experiment_transition(status, event.kind, event.describe())
        rows.append(
            {
                "experiment_id": event.experiment_id,
                "trial_id": event.trial_id,
                "kind": event.kind.value,
                "payload": event.payload,
                "idempotency_key": event.idempotency_key,
                "created_at": now,
            }
        )
        known[event.idempotency_key] = event  # a repeat later in the batch is a duplicate of this one
        results.append(True)
    for start in range(0, len(rows), CHUNK):
        _insert(conn, rows[start : start + CHUNK])
    return results


def stored_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, Event]:
    found: dict[str, Event] = {}
    unique = sorted(set(keys))
    for start in range(0, len(unique), CHUNK):
        query = select(events_t).where(events_t.c.idempotency_key.in_(unique[start : start + CHUNK]))
        for row in conn.execute(query):
            found[row.idempotency_key] = event_from_row(row)
    return found


def same_or_conflict(stored: Event, new: Event) -> bool:
    """False for a duplicate of `stored`; JournalConflict when the key carries different content."""
    if stored.content() == new.content():
        return False
    where = f"seq {stored.seq}" if stored.seq is not None else "earlier in this batch"
    raise JournalConflict(
        f"idempotency key {new.idempotency_key!r} is already stored ({where}) as "
        f"{stored.describe(with_key=False)} with payload {stored.payload!r}; refusing "
        f"{new.describe(with_key=False)} with payload {new.payload!r}"
    )


def event_from_row(row: Any) -> Event:
    # Stored events were validated on append; skip __post_init__ so that reading never fails
    # (and stays cheap) even if validation rules tighten later.
    event = object.__new__(Event)
    for name, value in (
        ("experiment_id", row.experiment_id),
        ("kind", EventKind(row.kind)),
        ("idempotency_key", row.idempotency_key),
        ("trial_id", row.trial_id),
        ("payload", row.payload),
        ("seq", row.seq),
        ("created_at", row.created_at),
    ):
        object.__setattr__(event, name, value)
    return event


def _probe_status(conn: Connection, event: Event) -> _Status:
    """The entity's current status, from its newest status-changing event; raises if unregistered."""
    e = events_t.c
    if event.trial_id is None:
        owner = select(experiments_t.c.id).where(experiments_t.c.id == event.experiment_id)
        entity, kinds = e.trial_id.is_(None), EXPERIMENT_STATUS_KINDS
    else:
        owner = select(trials_t.c.id).where(
            trials_t.c.experiment_id == event.experiment_id, trials_t.c.id == event.trial_id
        )
        entity, kinds = e.trial_id == event.trial_id, TRIAL_STATUS_KINDS
    newest = (
        select(e.kind)
        .where(e.experiment_id == event.experiment_id, entity, e.kind.in_(sorted(k.value for k in kinds)))
        .order_by(e.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    probe = conn.execute(owner.add_columns(newest.label("newest_kind"))).one_or_none()
    if probe is None:
        _raise_unregistered(conn, event)
    if event.trial_id is None:
        experiment_status = ExperimentStatus.PENDING
        if probe.newest_kind is None:
            return experiment_status
        return experiment_status_after(experiment_status, EventKind(probe.newest_kind))
    trial_status = TrialStatus.PENDING
    return trial_status if probe.newest_kind is None else trial_status_after(trial_status, EventKind(probe.newest_kind))


def _raise_unregistered(conn: Connection, event: Event) -> NoReturn:
    registered = conn.execute(select(experiments_t.c.id).where(experiments_t.c.id == event.experiment_id)).first()
    if registered is None:
        raise UnknownExperiment(
            f"{event.describe()}: no experiment {event.experiment_id!r} is registered; call register_experiment first"
        )
    raise UnknownTrial(
        f"{event.describe()}: no trial {event.trial_id!r} is registered in experiment "
        f"{event.experiment_id!r}; call register_trial first"
    )


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    stmt = (
        insert_for(conn)(events_t)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(events_t.c.idempotency_key)
    )
    inserted = set(conn.execute(stmt).scalars())
    if len(inserted) != len(rows):
        # Only possible if something writes without the journal's write lock; roll back and let
        # the caller retry, which then sees those events and dedupes against them.
        missing = sorted({row["idempotency_key"] for row in rows} - inserted)
        raise JournalError(f"events {missing[:5]} were stored concurrently by a writer outside the journal's lock")
