"""Appending a batch of events inside a write transaction (the caller holds the write lock).

Per batch: one query for the keys already stored, one probe per experiment for its trials'
newest statuses (and whether they are registered), one multi-row INSERT. Each event is checked
against the status left by the events before it, so a batch may walk a trial through several
states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

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
    statuses = _probe_statuses(conn, {(e.experiment_id, e.trial_id) for e in batch if e.idempotency_key not in known})
    results: list[bool] = []
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for event in batch:
        prior = known.get(event.idempotency_key)
        if prior is not None:
            results.append(same_or_conflict(prior, event))
            continue
        entity = (event.experiment_id, event.trial_id)
        status = statuses.get(entity)
        if status is None:
            _raise_unregistered(conn, event)
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
    """The stored events among `keys`: one query for the keys alone (nearly always none is
    stored), then the whole rows of those that are."""
    unique, key = sorted(set(keys)), events_t.c.idempotency_key
    stored: list[str] = []
    for start in range(0, len(unique), CHUNK):
        query = select(key).where(one_of(conn, key, unique[start : start + CHUNK]))
        stored += conn.execute(query).scalars()
    found: dict[str, Event] = {}
    for start in range(0, len(stored), CHUNK):
        for row in conn.execute(select(events_t).where(one_of(conn, key, stored[start : start + CHUNK]))):
            found[row.idempotency_key] = event_from_row(row)
    return found


def one_of(conn: Connection, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL as `= ANY(one array)`: one statement for any number of
    values, which the server plans once (a list of N parameters is a new statement for each N,
    planned as a scan of the table while its statistics are young)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
    return column.in_(values)


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


def _probe_statuses(conn: Connection, entities: set[_Entity]) -> dict[_Entity, _Status]:
    """Each registered entity's current status, from its newest status-changing event; an
    unregistered one is left out. One query per experiment (and one per experiment itself)."""
    e = events_t.c
    trial_kinds = sorted(k.value for k in TRIAL_STATUS_KINDS)
    found: dict[_Entity, _Status] = {}
    by_experiment: dict[str, list[str]] = {}
    for experiment_id, trial_id in entities:
        if trial_id is None:
            status = _probe_experiment(conn, experiment_id)
            if status is not None:
                found[(experiment_id, None)] = status
        else:
            by_experiment.setdefault(experiment_id, []).append(trial_id)
    for experiment_id, trial_ids in by_experiment.items():
        newest = (
            select(e.kind)
            .where(e.experiment_id == experiment_id, e.trial_id == trials_t.c.id, one_of(conn, e.kind, trial_kinds))
            .order_by(e.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        unique = sorted(set(trial_ids))
        for start in range(0, len(unique), CHUNK):
            chunk = one_of(conn, trials_t.c.id, unique[start : start + CHUNK])
            query = select(trials_t.c.id, newest.label("newest_kind"))
            rows = conn.execute(query.where(trials_t.c.experiment_id == experiment_id, chunk))
            for row in rows:
                status = TrialStatus.PENDING
                if row.newest_kind is not None:
                    status = trial_status_after(status, EventKind(row.newest_kind))
                found[(experiment_id, row.id)] = status
    return found


def _probe_experiment(conn: Connection, experiment_id: str) -> ExperimentStatus | None:
    e = events_t.c
    newest = (
        select(e.kind)
        .where(e.experiment_id == experiment_id, e.trial_id.is_(None),
               one_of(conn, e.kind, sorted(k.value for k in EXPERIMENT_STATUS_KINDS)))
        .order_by(e.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    probe = conn.execute(
        select(experiments_t.c.id, newest.label("newest_kind")).where(experiments_t.c.id == experiment_id)
    ).one_or_none()
    if probe is None:
        return None
    status = ExperimentStatus.PENDING
    return status if probe.newest_kind is None else experiment_status_after(status, EventKind(probe.newest_kind))


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
    # Rows as parameters of one statement (SQLAlchemy sends them as multi-row INSERTs): compiled
    # once, where `.values(rows)` compiled a new statement for every batch.
    stmt = (
        insert_for(conn)(events_t)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(events_t.c.idempotency_key)
    )
    inserted = set(conn.execute(stmt, rows).scalars())
    if len(inserted) != len(rows):
        # Another experiment's transaction (another lock) stored one of these keys while this one
        # ran, or something wrote without the journal's locks: roll back; the caller runs the
        # append again once, which then sees those events (a duplicate, or a JournalConflict).
        missing = sorted({row["idempotency_key"] for row in rows} - inserted)
        raise KeyRace(f"events {missing[:5]} were stored concurrently by another transaction")


class KeyRace(JournalError):
    """An idempotency key of the batch was stored by a concurrent transaction (see `_insert`)."""
