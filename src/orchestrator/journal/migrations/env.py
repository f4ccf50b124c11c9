"""Alembic environment for the journal.

`orchestrator.journal.migrate` runs it in-process and hands over a connection that already holds
the migration lock (config.attributes["connection"]). Run from the command line
(`alembic -c src/orchestrator/journal/alembic.ini -x url=... upgrade head`) it opens its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from orchestrator.journal.engine import MIGRATE_LOCK_KEY, create_journal_engine, normalize_url, write_transaction
from orchestrator.journal.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no journal URL: pass -x url=sqlite:///path/journal.db (or postgresql://...)")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=normalize_url(_url()).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_journal_engine(_url())
    try:
        with write_transaction(engine, (MIGRATE_LOCK_KEY,)) as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
