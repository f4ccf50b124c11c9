"""Create and drop PostgreSQL databases for journals (test fixtures, benchmarks, first-time setup)."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from .engine import normalize_url
from .errors import JournalError

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _libpq_url(url: URL, database: str) -> str:
    """A libpq connection string for `database` on the same server as `url`."""
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def _admin_connect(admin_url: str) -> psycopg.Connection:
    url = normalize_url(admin_url)
    try:
        return psycopg.connect(_libpq_url(url, url.database or "postgres"), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        shown = url.render_as_string(hide_password=True)
        raise JournalError(f"cannot reach the PostgreSQL server at {shown}: {exc}".strip()) from exc


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server of `admin_url`; return a journal URL for it."""
    if not _NAME.fullmatch(name):
        raise JournalError(f"database name {name!r} must match {_NAME.pattern}")
    with _admin_connect(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return normalize_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists, ending any sessions still connected to it first."""
    with _admin_connect(admin_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
