"""Pytest plugin: fresh PostgreSQL databases on the local server for the journal tests.

The server is the one on 127.0.0.1:5432 with trust auth (override with ORCH_TEST_POSTGRES_URL,
an admin URL to the `postgres` database). An unreachable server makes the PostgreSQL tests fail,
never skip: the cluster backend must be tested. Set ORCH_TEST_SKIP_POSTGRES=1 to skip them on
purpose. Databases get random names and are dropped afterwards (connections terminated first).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from orchestrator.journal.admin import create_database, drop_database
from orchestrator.journal.errors import JournalError

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SKIP_ENV = "ORCH_TEST_SKIP_POSTGRES"
URL_ENV = "ORCH_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of the server's maintenance database; fails the test when the server is unreachable."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        pytest.skip(f"PostgreSQL tests skipped on request ({SKIP_ENV} is set)")
    url = os.environ.get(URL_ENV, DEFAULT_ADMIN_URL)
    probe = f"orch_probe_{uuid.uuid4().hex[:12]}"
    try:
        create_database(url, probe)  # proves we can connect and have CREATEDB rights
        drop_database(url, probe)
        return url
    except JournalError as exc:
        problem = str(exc)
    pytest.fail(  # outside `except`, so the report is this message and not a chained traceback
        f"PostgreSQL tests need a server at {URL_ENV}={url!r} (trust auth, CREATEDB rights). {problem}\n"
        f"Start it (e.g. `pg_ctlcluster 15 main start`) or set {SKIP_ENV}=1 to skip these tests.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """Call it to get the URL of a new empty database; all are dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"orch_test_{uuid.uuid4().hex[:12]}"
        url = create_database(postgres_admin_url, name)
        created.append(name)
        return url

    yield make
    for name in created:
        drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database shared by the tests of one module, dropped when the module is done."""
    name = f"orch_test_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_admin_url, name)
    yield url
    drop_database(postgres_admin_url, name)
