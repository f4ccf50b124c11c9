"""Tables of the journal (SQLAlchemy 2 declarative). Migrations in `migrations/versions` create them.

A change here needs a new migration; `tests/test_journal.py` checks that the migrated database and
these models agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL: indexed, compact; plain JSON text on SQLite.
JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite wants a plain INTEGER PRIMARY KEY to alias the rowid.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no offset, so we restore it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the journal stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    manifest: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TrialRow(Base):
    """A trial id is a hash of its resolved config, so the same trial may sit in several experiments."""

    __tablename__ = "trials"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        # A trial event must name a registered trial; NULL trial_id (experiment events) skips the check.
        ForeignKeyConstraint(
            ["experiment_id", "trial_id"],
            ["trials.experiment_id", "trials.id"],
            name="fk_events_trial_trials",
        ),
        # Finds an entity's newest status event without scanning its annotations (checkpointed, evaluated).
        Index("ix_events_entity_kind_seq", "experiment_id", "trial_id", "kind", "seq"),
        {"sqlite_autoincrement": True},  # never reuse a seq, even after deleting the newest rows
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"))
    trial_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CheckpointRow(Base):
    """Index of stored checkpoints, keyed by trial id only: identical configs share checkpoints."""

    __tablename__ = "checkpoints"

    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


experiments = ExperimentRow.__table__
trials = TrialRow.__table__
events = EventRow.__table__
checkpoints = CheckpointRow.__table__


class LeaseRow(Base):
    """Who runs an experiment now (see lease.py): one row per experiment while a run holds it."""

    __tablename__ = "leases"

    experiment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    holder: Mapped[dict[str, Any]] = mapped_column(JsonType)
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


leases = LeaseRow.__table__


class GradingTaskRow(Base):
    """A human-evaluation task (grading.py): its document (items, models, image keys) and the
    experiments its models come from, so an experiment's report finds its tasks."""

    __tablename__ = "grading_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    experiments: Mapped[list[str]] = mapped_column(JsonType)
    document: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GradeRow(Base):
    """One grader's grade of one item, append-only: a re-submission is the next revision, and
    readers take the newest revision of each (task, grader, item)."""

    __tablename__ = "grades"
    __table_args__ = (
        Index("ix_grades_task_grader_item", "task_id", "grader", "item", "revision"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("grading_tasks.id"))
    grader: Mapped[str] = mapped_column(String(64))
    item: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    match: Mapped[dict[str, Any]] = mapped_column(JsonType)
    ranking: Mapped[list[str]] = mapped_column(JsonType)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


grading_tasks = GradingTaskRow.__table__
grades = GradeRow.__table__
