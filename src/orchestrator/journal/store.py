"""The Journal: append-only event store plus experiment/trial registry and checkpoint index.

Every write runs in one write transaction holding the write lock of each experiment it writes
(see engine.py). An append dedupes by idempotency key, checks the lifecycle transition against
the entity's newest status event and inserts (appender.py); doing the check under the
experiment's lock makes it race-free between threads, processes and hosts.

Every operation, read or write (fence check included), runs whole under the journal's one retry
policy (retry.py): a terminated connection, a failover or a locked SQLite file is retried with
backoff, and a journal unreachable past the bound is JournalUnavailable. A write either commits
and is acknowledged, or raises: none is dropped. A run's SQLite journal file is checked before
each of its writes to be the one opened and writable (engine.JournalFile).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select, select
from sqlalchemy.exc import DBAPIError

from orchestrator.telemetry import current as telemetry

from . import grading as grading_ops
from . import lease as lease_ops
from .appender import KeyRace, append_batch, event_from_row
from .checkpoints import Checkpoint
from .engine import (
    JournalFile,
    insert_for,
    is_memory,
    location,
    lock_keys,
    masked,
    normalize_url,
    open_checked,
    read_transaction,
    write_transaction,
)
from .errors import (
    AmbiguousTrial,
    IllegalTransition,
    InvalidEvent,
    JournalConflict,
    JournalLocationError,
    UnknownExperiment,
    UnknownTrial,
)
from .events import Event, EventKind, canonical_json, check_id
from .group_commit import GroupCommit
from .lease import Fence, Holder, Lease
from .migrate import upgrade_to_head
from .retry import JournalRetry, JournalUnavailable, detail
from .schema import checkpoints as checkpoints_t
from .schema import events as events_t
from .schema import experiments as experiments_t
from .schema import trials as trials_t
from .schema import utcnow
from .state import ExperimentState, TrialState, fold_experiment, fold_trial

R = TypeVar("R")


def open_journal(url: str, *, create: bool = True) -> Journal:
    """Open the journal at `url`, creating or upgrading its schema to the migration head.

    `url`: `sqlite:///path/journal.db` (parent directories are created; a bare path works too) or
    `postgresql://user@host/db` (run with psycopg 3). Safe to call from many processes at once.
    create=False (readers: status, results, cancel, resume) never creates anything: a SQLite file
    that is not there is a JournalLocationError naming it.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and not is_memory(parsed) and not parsed.query.get("uri"):
        path = Path(parsed.database).expanduser()  # type: ignore[arg-type]
        if not create and not path.is_file():
            raise JournalLocationError(f"no journal at {path} (nothing has been run with it; check --journal "
                                       f"or $ORCH_JOURNAL)")
        if create and path.exists() and not os.access(path, os.W_OK):  # readers may read it
            raise JournalLocationError(f"the journal {path} is read-only")
    engine = open_checked(url, upgrade_to_head)
    try:
        file = JournalFile.of(parsed)
    except OSError as exc:  # gone between the upgrade and here
        engine.dispose()
        raise JournalLocationError(f"no journal at {parsed.database}: {exc.strerror or exc}") from None
    return Journal(engine, file=file)


# What a database says when it refuses writes: a read-only SQLite file, a PostgreSQL database or
# role in read-only mode, a role without INSERT rights.
_READ_ONLY = ("readonly database", "read-only transaction", "permission denied")


class Journal:
    """Thread-safe: each call checks a connection out of the engine's pool.

    Open one per process, after any fork: pooled connections must not cross a fork.
    """

    def __init__(self, engine: Engine, fence: Fence | None = None, file: JournalFile | None = None,
                 policy: JournalRetry | None = None) -> None:
        self._engine = engine
        self._fence = fence
        self._file = file
        self._policy = policy or JournalRetry.from_env()
        self._where = location(engine.url)
        self._group = GroupCommit(self._commit_group)

    def fenced(self, experiment_id: str, owner: str, holder: Holder) -> Journal:
        """This journal (same engine) writing only while `owner` holds `experiment_id`'s lease
        and `holder` runs: every write checks both in its transaction, else LeaseLost."""
        return Journal(self._engine, Fence(experiment_id, owner, holder), self._file, self._policy)

    def check_file(self) -> None:
        """JournalUnavailable, naming the file, when a SQLite journal's file was deleted, replaced
        or turned read-only since it was opened (a heartbeat asks; so does every write)."""
        if self._file is not None:
            self._file.check()

    def _write(self, body: Callable[[Connection], R], what: str, fenced: bool = True,
               experiments: Iterable[str] = ()) -> R:
        """`body(conn)` in a write transaction holding the locks of `experiments` (the ones it
        writes; none: the journal-wide lock) and of the fence's (checked, if any), retried whole
        on transient faults; a journal that refuses writes (read-only file or database, no
        INSERT right) is a JournalLocationError naming it, or JournalUnavailable under a run."""
        scope = set(experiments)
        if fenced and self._fence is not None:
            scope.add(self._fence.experiment_id)
        keys = lock_keys(scope)

        def once() -> R:
            if self._fence is not None:  # a run's writes: into the file it began with, or none
                self.check_file()
            with write_transaction(self._engine, keys) as conn:
                if fenced and self._fence is not None:
                    self._fence.check(conn)
                return body(conn)

        try:
            return self._policy.run(once, self._where, what)
        except DBAPIError as exc:
            said = " ".join(detail(exc).split())
            if any(s in said for s in _READ_ONLY):
                if self._fence is not None:  # it was writable when the run began
                    raise JournalUnavailable(f"the journal at {self._where} turned read-only under the run: "
                                             f"{said}") from None
                raise JournalLocationError(f"the journal at {self._where} is read-only: {said}") from exc
            raise

    def _read(self, body: Callable[[Connection], R], what: str) -> R:
        """`body(conn)` in one read transaction (a consistent snapshot), retried whole on transient faults."""
        def once() -> R:
            with read_transaction(self._engine) as conn:
                return body(conn)

        return self._policy.run(once, self._where, what)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Journal({masked(self._engine.url)})"

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    # ----------------------------------------------------------------- registry

    def register_experiment(self, experiment_id: str, name: str, manifest: str) -> bool:
        """Record an experiment. True when new, False when already there with the same name and manifest."""
        check_id(experiment_id, "experiment_id")
        if not isinstance(name, str) or not isinstance(manifest, str):
            raise InvalidEvent("experiment name and manifest must be strings")
        row = {"id": experiment_id, "name": name, "manifest": manifest, "created_at": utcnow()}

        def body(conn: Connection) -> Any:
            if self._insert_new(conn, experiments_t, row, ["id"]):
                return None
            return conn.execute(
                select(experiments_t.c.name, experiments_t.c.manifest).where(experiments_t.c.id == experiment_id)
            ).one()

        stored = self._write(body, f"register experiment {experiment_id}", experiments=[experiment_id])
        if stored is None:
            return True
        if (stored.name, stored.manifest) != (name, manifest):
            what = "name" if stored.name != name else "manifest"
            raise JournalConflict(f"experiment {experiment_id!r} is already registered with a different {what}")
        return False

    def register_trial(self, experiment_id: str, trial_id: str, config: Mapping[str, Any]) -> bool:
        """Record a trial of an experiment. True when new, False when already there with the same config."""
        return self.register_trials(experiment_id, {trial_id: config})[trial_id]

    def register_trials(
        self, experiment_id: str, configs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, bool]:
        """Register several trials in one transaction (a sweep); per trial id, whether it was new."""
        rows = []
        for trial_id, config in configs.items():
            check_id(trial_id, "trial_id")
            if not isinstance(config, Mapping):
                raise InvalidEvent(f"config of trial {trial_id!r} must be a mapping")
            rows.append((trial_id, canonical_json(dict(config), f"config of trial {trial_id!r}")))

        def body(conn: Connection) -> dict[str, bool]:
            result: dict[str, bool] = {}
            self._require_experiment(conn, experiment_id)
            for trial_id, config in rows:
                row = {"experiment_id": experiment_id, "id": trial_id, "config": config, "created_at": utcnow()}
                if self._insert_new(conn, trials_t, row, ["experiment_id", "id"]):
                    result[trial_id] = True
                    continue
                stored = conn.execute(
                    select(trials_t.c.config).where(
                        trials_t.c.experiment_id == experiment_id, trials_t.c.id == trial_id
                    )
                ).scalar_one()
                if stored != config:
                    raise JournalConflict(
                        f"trial {trial_id!r} of experiment {experiment_id!r} is already registered with a "
                        "different config (trial ids are config hashes: is the hash stale?)"
                    )
                result[trial_id] = False
            return result

        return self._write(body, f"register {len(rows)} trial(s) of {experiment_id}", experiments=[experiment_id])

    # ------------------------------------------------------------------- events

    def append(self, event: Event) -> bool:
        """Store `event`. True when new; False when its key is already stored with the same content.

        Raises JournalConflict when the key is stored with different content, IllegalTransition
        when the kind is not allowed from the entity's status, UnknownExperiment/UnknownTrial when
        the entity is not registered.
        """
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[Event]) -> list[bool]:
        """Store several events atomically, in order: all are stored (or deduplicated) or none is."""
        batch = list(events)
        for event in batch:
            if not isinstance(event, Event):
                raise InvalidEvent(f"expected an Event, got {type(event).__name__}")
        if not batch:
            return []
        started = time.perf_counter()
        stored = self._group.append(batch)  # with whatever other threads append meanwhile
        telemetry().journal_appended(backend=self.dialect, events=len(batch), seconds=time.perf_counter() - started)
        return stored

    def _commit_group(self, batches: Sequence[Sequence[Event]]) -> list[list[bool] | BaseException]:
        """The batches of concurrent `append_many` calls, in one transaction (group_commit.py):
        per batch, its results or the error that refused its events. An event refused (conflict,
        illegal transition, unknown entity) fails only its own caller's batch: the group is then
        run again with each batch in a savepoint of its own."""
        flat = [event for batch in batches for event in batch]
        what = f"append {flat[0].describe(with_key=False)}" + (f" and {len(flat) - 1} more" if len(flat) > 1 else "")
        experiments = {event.experiment_id for event in flat}

        def write(body: Callable[[Connection], R]) -> R:
            try:
                return self._write(body, what, experiments=experiments)
            except KeyRace:  # once more: the keys are stored now, and dedupe (or conflict) as usual
                return self._write(body, what, experiments=experiments)

        try:
            stored = write(lambda conn: append_batch(conn, flat))
        except _REFUSED:
            if len(batches) == 1:
                raise
            return write(lambda conn: _each_in_a_savepoint(conn, batches))
        outcomes: list[list[bool] | BaseException] = []
        for batch in batches:
            outcomes.append(stored[:len(batch)])
            stored = stored[len(batch):]
        return outcomes

    def events(
        self,
        experiment_id: str | None = None,
        trial_id: str | None = None,
        after_seq: int | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Stored events in `seq` order, filtered by any of the arguments given.

        Poll with `experiment_id` and `after_seq=<last seq seen>` to tail an experiment: its writes
        are serialised, so none of its events with a smaller seq can commit after one with a
        larger seq. Across experiments that does not hold (they commit concurrently): tail each
        experiment on its own.
        """
        query = select(events_t)
        if experiment_id is not None:
            query = query.where(events_t.c.experiment_id == experiment_id)
        if trial_id is not None:
            query = query.where(events_t.c.trial_id == trial_id)
        if after_seq is not None:
            query = query.where(events_t.c.seq > after_seq)
        if kinds is not None:
            query = query.where(events_t.c.kind.in_([_kind(k) for k in kinds]))
        query = query.order_by(events_t.c.seq)
        if limit is not None:
            query = query.limit(limit)
        return self._read(lambda conn: [event_from_row(row) for row in conn.execute(query)], "read events")

    # -------------------------------------------------------------- read models

    def experiment_state(self, experiment_id: str) -> ExperimentState:
        return self._read(lambda conn: self._experiment_state(conn, experiment_id), f"read experiment {experiment_id}")

    def _experiment_state(self, conn: Connection, experiment_id: str) -> ExperimentState:
        row = conn.execute(select(experiments_t).where(experiments_t.c.id == experiment_id)).one_or_none()
        if row is None:
            raise UnknownExperiment(f"no experiment {experiment_id!r} in the journal")
        configs = {
            r.id: r.config
            for r in conn.execute(
                select(trials_t.c.id, trials_t.c.config)
                .where(trials_t.c.experiment_id == experiment_id)
                .order_by(trials_t.c.created_at, trials_t.c.id)
            )
        }
        events = self._query_events(conn, select(events_t).where(events_t.c.experiment_id == experiment_id))
        return fold_experiment(row.id, row.name, row.manifest, events, configs, row.created_at)

    def trial_state(self, trial_id: str, experiment_id: str | None = None) -> TrialState:
        """State of a trial; `experiment_id` is needed only when the trial is in several experiments."""
        return self._read(lambda conn: self._trial_state(conn, trial_id, experiment_id), f"read trial {trial_id}")

    def _trial_state(self, conn: Connection, trial_id: str, experiment_id: str | None) -> TrialState:
        query = select(trials_t.c.experiment_id, trials_t.c.config).where(trials_t.c.id == trial_id)
        if experiment_id is not None:
            query = query.where(trials_t.c.experiment_id == experiment_id)
        rows = conn.execute(query).all()
        if not rows:
            where = f" in experiment {experiment_id!r}" if experiment_id else ""
            raise UnknownTrial(f"no trial {trial_id!r}{where} in the journal")
        if len(rows) > 1:
            raise AmbiguousTrial(
                f"trial {trial_id!r} is in experiments {sorted(r.experiment_id for r in rows)}; "
                "pass experiment_id"
            )
        exp_id, config = rows[0]
        events = self._query_events(
            conn,
            select(events_t).where(events_t.c.experiment_id == exp_id, events_t.c.trial_id == trial_id),
        )
        return fold_trial(exp_id, trial_id, events, config)

    def list_experiments(self) -> list[ExperimentState]:
        """Every experiment with its trials, oldest first (reads the whole journal)."""
        return self._read(self._list_experiments, "list experiments")

    def _list_experiments(self, conn: Connection) -> list[ExperimentState]:
        rows = conn.execute(select(experiments_t).order_by(experiments_t.c.created_at, experiments_t.c.id)).all()
        configs: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in conn.execute(select(trials_t).order_by(trials_t.c.created_at, trials_t.c.id)):
            configs[r.experiment_id][r.id] = r.config
        by_experiment: dict[str, list[Event]] = defaultdict(list)
        for event in self._query_events(conn, select(events_t)):
            by_experiment[event.experiment_id].append(event)
        return [
            fold_experiment(r.id, r.name, r.manifest, by_experiment[r.id], configs[r.id], r.created_at) for r in rows
        ]

    # ------------------------------------------------------------- checkpoints

    def record_checkpoint(self, trial_id: str, step: int, uri: str, sha256: str, size: int) -> bool:
        """Index a stored checkpoint. True when new; False when (trial_id, step) is already indexed
        identically; JournalConflict when it is indexed with a different uri, digest or size."""
        checkpoint = Checkpoint(trial_id, step, uri, sha256, size)
        row = {
            "trial_id": trial_id,
            "step": step,
            "uri": uri,
            "sha256": checkpoint.sha256,
            "size": size,
            "created_at": utcnow(),
        }

        def body(conn: Connection) -> Any:
            if self._insert_new(conn, checkpoints_t, row, ["trial_id", "step"]):
                return None
            return conn.execute(
                select(checkpoints_t).where(checkpoints_t.c.trial_id == trial_id, checkpoints_t.c.step == step)
            ).one()

        stored = self._write(body, f"record the checkpoint of trial {trial_id} at step {step}")
        if stored is None:
            return True
        if (stored.uri, stored.sha256, stored.size) != checkpoint.content():
            raise JournalConflict(
                f"checkpoint of trial {trial_id!r} at step {step} is already recorded as "
                f"{stored.uri} (sha256 {stored.sha256}, {stored.size} bytes); refusing "
                f"{uri} (sha256 {checkpoint.sha256}, {size} bytes)"
            )
        return False

    def checkpoints(self, trial_id: str) -> list[Checkpoint]:
        """The trial's indexed checkpoints, by step."""
        query = select(checkpoints_t).where(checkpoints_t.c.trial_id == trial_id).order_by(checkpoints_t.c.step)
        return self._read(lambda conn: [_checkpoint_from_row(r) for r in conn.execute(query)],
                          f"read the checkpoints of {trial_id}")

    def latest_checkpoint(self, trial_id: str) -> Checkpoint | None:
        """The trial's checkpoint with the highest step, or None."""
        query = (
            select(checkpoints_t)
            .where(checkpoints_t.c.trial_id == trial_id)
            .order_by(checkpoints_t.c.step.desc())
            .limit(1)
        )
        row = self._read(lambda conn: conn.execute(query).one_or_none(), f"read the checkpoints of {trial_id}")
        return None if row is None else _checkpoint_from_row(row)

    # ------------------------------------------------------------------ leases

    def acquire_lease(self, experiment_id: str, owner: str, holder: Holder, ttl: float | None = None) -> Lease:
        """Take `experiment_id`'s lease for `owner` (LeaseHeld when a live owner has it)."""
        ttl = lease_ops.ttl_s() if ttl is None else ttl
        return self._write(lambda conn: lease_ops.acquire(conn, experiment_id, owner, holder, ttl),
                           f"take the lease of {experiment_id}", fenced=False, experiments=[experiment_id])

    def renew_lease(self, experiment_id: str, owner: str, ttl: float | None = None) -> None:
        """Push the expiry on (LeaseLost when `owner` no longer holds it)."""
        ttl = lease_ops.ttl_s() if ttl is None else ttl
        self._write(lambda conn: lease_ops.renew(conn, experiment_id, owner, ttl),
                    f"renew the lease of {experiment_id}", fenced=False, experiments=[experiment_id])

    def release_lease(self, experiment_id: str, owner: str) -> bool:
        return self._write(lambda conn: lease_ops.release(conn, experiment_id, owner),
                           f"release the lease of {experiment_id}", fenced=False, experiments=[experiment_id])

    def lease(self, experiment_id: str) -> Lease | None:
        return self._read(lambda conn: lease_ops.read(conn, experiment_id), f"read the lease of {experiment_id}")

    # ----------------------------------------------------------------- grading

    def register_grading_task(self, task_id: str, experiments: Sequence[str], document: Mapping[str, Any]) -> bool:
        """Record a human-evaluation task; True when new, False when already there identically."""
        return self._write(lambda conn: grading_ops.register_task(conn, task_id, experiments, document),
                           f"register grading task {task_id}", fenced=False)

    def grading_task(self, task_id: str) -> dict[str, Any]:
        """The task's document (UnknownGradingTask when absent)."""
        return self._read(lambda conn: grading_ops.read_task(conn, task_id), f"read grading task {task_id}")

    def grading_task_ids(self, experiment_id: str | None = None) -> list[str]:
        return self._read(lambda conn: grading_ops.task_ids(conn, experiment_id), "list grading tasks")

    def record_grade(self, grade: grading_ops.Grade, replaces: int) -> tuple[int, bool]:
        """Store a grade as revision `replaces + 1` (replaces: the revision shown, 0 for none): (revision,
        stored); grading_ops.StaleGrade when a newer one exists."""
        return self._write(lambda conn: grading_ops.record(conn, grade, replaces),
                           f"record a grade of task {grade.task_id}", fenced=False)

    def grades(self, task_id: str, grader: str | None = None) -> list[grading_ops.Grade]:
        """The newest grade of each (grader, item) of the task."""
        def body(conn: Connection) -> list[grading_ops.Grade]:
            grading_ops.read_task(conn, task_id)
            return grading_ops.latest(conn, task_id, grader)

        return self._read(body, f"read the grades of task {task_id}")

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _insert_new(conn: Connection, table: Any, row: Mapping[str, Any], keys: Sequence[str]) -> bool:
        """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted."""
        stmt = insert_for(conn)(table).values(**row).on_conflict_do_nothing(index_elements=list(keys))
        return conn.execute(stmt.returning(*[table.c[k] for k in keys])).first() is not None

    @staticmethod
    def _query_events(conn: Connection, query: Select[Any]) -> list[Event]:
        return [event_from_row(row) for row in conn.execute(query.order_by(events_t.c.seq))]

    @staticmethod
    def _require_experiment(conn: Connection, experiment_id: str) -> None:
        found = conn.execute(select(experiments_t.c.id).where(experiments_t.c.id == experiment_id)).first()
        if found is None:
            raise UnknownExperiment(f"no experiment {experiment_id!r} is registered; call register_experiment first")


# What refuses one caller's events rather than the whole write.
_REFUSED = (JournalConflict, IllegalTransition, UnknownExperiment, UnknownTrial)


def _each_in_a_savepoint(conn: Connection, batches: Sequence[Sequence[Event]]) -> list[list[bool] | BaseException]:
    outcomes: list[list[bool] | BaseException] = []
    for batch in batches:
        try:
            with conn.begin_nested():
                outcomes.append(append_batch(conn, batch))
        except _REFUSED as exc:
            outcomes.append(exc)
    return outcomes


def _kind(kind: EventKind | str) -> str:
    try:
        return EventKind(kind).value
    except ValueError:
        raise InvalidEvent(f"unknown event kind {kind!r}; known kinds: {', '.join(EventKind)}") from None


def _checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(row.trial_id, row.step, row.uri, row.sha256, row.size, row.created_at)
