"""Engines for the journal: URL normalisation, SQLite pragmas and write-transaction locking.

Write transactions are serialised on both backends, which is what makes the append-time
transition check race-free and keeps `seq` order equal to commit order (a reader tailing with
`after_seq` never skips an event that commits late with a smaller seq):

- SQLite: WAL (readers never block the writer), a busy timeout, and `BEGIN IMMEDIATE` for writes,
  so a writer takes the database's write lock up front instead of failing with "database is
  locked" when it upgrades a read transaction;
- PostgreSQL: a transaction-scoped advisory lock taken first in every write transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from .errors import JournalError

SQLITE_BUSY_TIMEOUT_S = 60.0
_WRITE_OPTION = "journal_write"

# Advisory lock keys (any fixed 64-bit ints; scoped to one PostgreSQL database).
APPEND_LOCK_KEY = 0x6A6F75726E616C01  # "journal" + 1
MIGRATE_LOCK_KEY = 0x6A6F75726E616C02


def normalize_url(url: str | URL) -> URL:
    """Parse a journal URL; a bare path means SQLite, `postgresql://` means psycopg 3."""
    if isinstance(url, URL):
        parsed = url  # not str(url): that would mask the password
    else:
        raw = url if "://" in url else f"sqlite:///{url}"
        try:
            parsed = make_url(raw)
        except ArgumentError as exc:
            raise JournalError(f"cannot parse journal URL {raw!r}: {exc}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise JournalError(f"journal URL {parsed!r}: only the psycopg driver is supported, not {driver!r}")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise JournalError(f"journal URL {parsed!r}: only the standard sqlite3 driver is supported")
        return parsed
    raise JournalError(f"journal URL {parsed!r}: unsupported database {backend!r} (use sqlite or postgresql)")


def is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def create_journal_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An Engine configured for the journal's locking rules (see module docstring)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    return _create_sqlite_engine(parsed, **kwargs)


def _create_sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    if is_memory(url):
        # One shared connection, or each checkout would see its own empty database. Single-threaded use only.
        kwargs.setdefault("poolclass", StaticPool)
    elif not url.query.get("uri"):
        folder = Path(url.database).expanduser().parent  # type: ignore[arg-type]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal's folder {folder}: {exc}") from exc
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so that we choose DEFERRED or IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            _enter_wal(cursor)
            # FULL: a committed event survives power loss too; the journal is the source of truth.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enter_wal(cursor: Any) -> None:
    """Switch the database to WAL, waiting out other writers. SQLite answers this pragma with
    "database is locked" at once, without its busy handler, while another connection of a
    rollback-journal database holds the write lock: what processes opening a fresh journal
    together meet. The mode is stored in the file, so once one of them has switched it, the
    others' pragma is a no-op."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


@contextmanager
def write_transaction(engine: Engine, lock_key: int = APPEND_LOCK_KEY) -> Iterator[Connection]:
    """A transaction that holds the journal's write lock from its first statement to commit."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that sees one consistent snapshot across several queries."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def insert_for(conn: Connection) -> Callable[..., Any]:
    """The dialect's INSERT construct, which offers ON CONFLICT DO NOTHING on both backends."""
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


def masked(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return normalize_url(url).render_as_string(hide_password=True)
    except JournalError:
        return "<unparseable URL>"
