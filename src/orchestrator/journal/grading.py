"""Grading tasks and grades in the journal (human evaluation; see eval/grading.py for the tallies).

A task is registered once under its content id (a rebuild of the same task is a no-op). A grade
is append-only: grader G's grade of item I of task T is stored as revision r under the
idempotency key `T/G/I/r`. A re-submission is revision r+1 and replaces the earlier one for
readers (`latest`), so a grade is never counted twice.

Every write names the revision it replaces (0: "there is no grade yet"), and is a compare-and-set
done by the database: one INSERT ... SELECT that adds revision `replaces + 1` only where the
newest stored revision is `replaces`, with ON CONFLICT DO NOTHING on the unique idempotency key.
Two writers (two graders' tabs, two heads) that saw the same revision cannot both win, on SQLite
and on PostgreSQL, whatever the isolation level; the loser gets `StaleGrade` naming the current
revision. A retried request (its first try stored, the answer lost) and an unchanged re-submission
are no-ops, not conflicts.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, cast, func, literal, select

from .engine import insert_for
from .errors import InvalidEvent, JournalConflict, JournalError
from .events import canonical_json, check_id
from .schema import grades as grades_t
from .schema import grading_tasks as tasks_t
from .schema import utcnow


class UnknownGradingTask(JournalError, LookupError):
    """No grading task with that id is registered."""


class StaleGrade(JournalConflict):
    """The grade a write meant to replace is no longer the newest: `current` is (0: none)."""

    def __init__(self, message: str, current: int):
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class Grade:
    task_id: str
    grader: str
    item: int
    revision: int
    match: dict[str, bool]   # model -> "matches the prompt"
    ranking: list[str]       # models, best first
    created_at: datetime | None = None


def grade_key(task_id: str, grader: str, item: int, revision: int) -> str:
    return f"{task_id}/{grader}/{item}/{revision}"


def register_task(conn: Connection, task_id: str, experiments: Sequence[str], document: Mapping[str, Any]) -> bool:
    check_id(task_id, "task_id")
    doc = canonical_json(dict(document), f"document of grading task {task_id!r}")
    row = {"id": task_id, "experiments": sorted(set(experiments)), "document": doc, "created_at": utcnow()}
    stmt = insert_for(conn)(tasks_t).values(**row).on_conflict_do_nothing(index_elements=["id"])
    if conn.execute(stmt.returning(tasks_t.c.id)).first() is not None:
        return True
    stored = conn.execute(select(tasks_t.c.document).where(tasks_t.c.id == task_id)).scalar_one()
    if stored != doc:
        raise JournalConflict(f"grading task {task_id!r} is already registered with a different document")
    return False


def read_task(conn: Connection, task_id: str) -> dict[str, Any]:
    doc = conn.execute(select(tasks_t.c.document).where(tasks_t.c.id == task_id)).scalar_one_or_none()
    if doc is None:
        raise UnknownGradingTask(f"no grading task {task_id!r} in the journal")
    return doc


def task_ids(conn: Connection, experiment_id: str | None = None) -> list[str]:
    """Task ids, oldest first; with `experiment_id`, those with a model from that experiment."""
    rows = conn.execute(select(tasks_t.c.id, tasks_t.c.experiments).order_by(tasks_t.c.created_at, tasks_t.c.id))
    return [r.id for r in rows if experiment_id is None or experiment_id in r.experiments]


def record(conn: Connection, grade: Grade, replaces: int) -> tuple[int, bool]:
    """Store `grade` as revision `replaces + 1`; (revision, stored). `replaces` is the revision the
    client last saw (0: no grade yet); if a newer one exists since, StaleGrade, never an overwrite."""
    check_id(grade.grader, "grader")
    if not isinstance(grade.item, int) or grade.item < 0:
        raise InvalidEvent(f"item must be a non-negative int, got {grade.item!r}")
    if not isinstance(replaces, int) or isinstance(replaces, bool) or replaces < 0:
        raise InvalidEvent(f"replaces must be the revision shown (0: no grade yet), got {replaces!r}")
    read_task(conn, grade.task_id)
    match = canonical_json(dict(grade.match), "match")
    ranking = canonical_json(list(grade.ranking), "ranking")
    where = (grades_t.c.task_id == grade.task_id, grades_t.c.grader == grade.grader, grades_t.c.item == grade.item)
    newest = _newest(conn, where)
    if newest is not None and (newest.match, newest.ranking) == (match, ranking) \
            and replaces in (newest.revision, newest.revision - 1):
        return newest.revision, False  # unchanged, or a retry of the request that stored it
    revision = replaces + 1
    row = {"task_id": grade.task_id, "grader": grade.grader, "item": grade.item, "revision": revision,
           "match": match, "ranking": ranking,
           "idempotency_key": grade_key(grade.task_id, grade.grader, grade.item, revision), "created_at": utcnow()}
    current = select(func.coalesce(func.max(grades_t.c.revision), 0)).where(*where).scalar_subquery()
    # PostgreSQL cannot infer a bare parameter's type in an INSERT ... SELECT list: cast there (not on
    # SQLite, where CAST(... AS DATETIME) would turn the timestamp text into a number)
    pg = conn.dialect.name == "postgresql"
    values = select(*[cast(literal(v, grades_t.c[k].type), grades_t.c[k].type) if pg
                      else literal(v, grades_t.c[k].type) for k, v in row.items()]).where(current == replaces)
    stmt = insert_for(conn)(grades_t).from_select(list(row), values) \
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    if conn.execute(stmt.returning(grades_t.c.seq)).first() is not None:
        return revision, True
    newest = _newest(conn, where)
    now = 0 if newest is None else newest.revision
    raise StaleGrade(f"grade of item {grade.item} by {grade.grader!r} is at revision {now}, not {replaces}: "
                     f"it changed since it was shown (reload the item)", now)


def _newest(conn: Connection, where: tuple) -> Any:
    return conn.execute(select(grades_t).where(*where).order_by(grades_t.c.revision.desc()).limit(1)).first()


def latest(conn: Connection, task_id: str, grader: str | None = None) -> list[Grade]:
    """The newest revision of every (grader, item) of the task, by grader then item."""
    newest = (select(grades_t.c.grader, grades_t.c.item, func.max(grades_t.c.revision).label("revision"))
              .where(grades_t.c.task_id == task_id).group_by(grades_t.c.grader, grades_t.c.item))
    if grader is not None:
        newest = newest.where(grades_t.c.grader == grader)
    n = newest.subquery()
    rows = conn.execute(select(grades_t).join(n, (grades_t.c.grader == n.c.grader) & (grades_t.c.item == n.c.item)
                                              & (grades_t.c.revision == n.c.revision))
                        .where(grades_t.c.task_id == task_id).order_by(grades_t.c.grader, grades_t.c.item)).all()
    return [Grade(r.task_id, r.grader, r.item, r.revision, r.match, r.ranking, r.created_at) for r in rows]
