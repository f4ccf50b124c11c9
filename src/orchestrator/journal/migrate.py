"""Bring a journal database to the Alembic head, in code: no alembic.ini needed at run time.

Several processes may open a fresh journal at once (a coordinator and its trainers): the upgrade
runs inside a write transaction holding the migration lock (PostgreSQL advisory lock, SQLite
BEGIN IMMEDIATE), and re-reads the revision once it holds it, so only the first one migrates.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from .engine import MIGRATE_LOCK_KEY, write_transaction
from .errors import SchemaError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:
        raise SchemaError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's revision (`alembic current`), None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> str:
    """Migrate the database to head if it is behind; return the head revision."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:  # the common case: no lock taken
            return head
    with write_transaction(engine, (MIGRATE_LOCK_KEY,)) as conn:
        current = current_revision(conn)
        if current == head:
            return head
        if current is not None and _unknown(current):
            raise SchemaError(
                f"the journal database is at schema revision {current!r}, which this version of "
                f"orchestrator does not know (its head is {head!r}); upgrade orchestrator"
            )
        command.upgrade(alembic_config(conn), "head")
    return head


def _unknown(revision: str) -> bool:
    return revision not in {script.revision for script in script_directory().walk_revisions()}
