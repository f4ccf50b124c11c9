"""Human evaluation: grading tasks and the graders' grades.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "grading_tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("experiments", JSON, nullable=False),
        sa.Column("document", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grading_tasks"),
    )
    op.create_table(
        "grades",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("grader", sa.String(64), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("match", JSON, nullable=False),
        sa.Column("ranking", JSON, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["grading_tasks.id"], name="fk_grades_task_id_grading_tasks"),
        sa.PrimaryKeyConstraint("seq", name="pk_grades"),
        sa.UniqueConstraint("idempotency_key", name="uq_grades_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_grades_task_grader_item", "grades", ["task_id", "grader", "item", "revision"])


def downgrade() -> None:
    op.drop_index("ix_grades_task_grader_item", table_name="grades")
    op.drop_table("grades")
    op.drop_table("grading_tasks")
