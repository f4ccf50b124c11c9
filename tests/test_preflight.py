"""Journal and blob locations are checked before anything runs: one line naming the location,
exit 2 for a location that is wrong as given, 1 for one that cannot be reached; readers create
nothing. PostgreSQL cases run against the real server on 127.0.0.1:5432."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ORCH = str(Path(sys.executable).with_name("orch"))


def orch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ORCH, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readers_create_nothing_and_say_where_they_looked(tmp_path):
    missing = tmp_path / "nowhere" / "journal.db"
    for args in (["status"], ["results", "e1"], ["cancel", "e1"], ["resume", "e1"]):
        r = orch(*args, "--journal", f"sqlite:///{missing}", cwd=tmp_path)
        assert r.returncode == 2 and f"no journal at {missing}" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "nowhere").exists()  # nothing created


@pytest.mark.postgres
def test_postgres_locations_bad_input_2_unreachable_1(tmp_path):
    cases = [
        ("postgresql://postgres@127.0.0.1:5432/orch_no_such_db", 2, 'database "orch_no_such_db" does not exist'),
        ("postgresql://orch_no_such_role@127.0.0.1:5432/postgres", 2, 'role "orch_no_such_role" does not exist'),
        (f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", 1, "cannot reach the journal"),
    ]
    for url, code, fragment in cases:
        r = orch("status", "--journal", url, cwd=tmp_path)
        assert r.returncode == code and fragment in r.stderr, (url, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3


def test_run_checks_the_blob_store_before_ray_starts(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: pre\nmodel: {variant: sd, base: tiny-random}\ndata: {train: {kind: shapes, n: 8}}\n"
                        "train: {steps: 1, batch_size: 4}\n"
                        "storage: {blobs: ./a-file/blobs, journal: sqlite:///./journal.db}\n")
    r = orch("run", str(manifest), "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and "the blob store" in r.stderr and "a-file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "journal.db").exists()  # refused before the journal was touched


MANIFEST = ("name: ro\nmodel: {variant: sd, base: tiny-random}\ndata: {train: {kind: shapes, n: 8}}\n"
            "train: {steps: 1, batch_size: 4}\nstorage: {blobs: ./blobs, journal: %s}\n")


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i: read-only even for root (os.access says writable to root, so a mode bit can't test it)."""
    r = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_read_only_sqlite_journal_is_refused_before_anything_runs(tmp_path):
    journal = tmp_path / "journal.db"
    (tmp_path / "m.yaml").write_text(MANIFEST % f"sqlite:///{journal}")
    first = orch("validate", "m.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    from orchestrator.journal import open_journal

    open_journal(f"sqlite:///{journal}").close()  # an existing journal at the schema head, in WAL mode
    before = journal.read_bytes()
    if not _immutable(journal, True):
        pytest.skip("chattr +i is not available here")
    try:
        r = orch("run", "m.yaml", "--no-progress", "--no-metrics", cwd=tmp_path)
        status = orch("status", "--journal", f"sqlite:///{journal}", cwd=tmp_path)
    finally:
        _immutable(journal, False)
    assert r.returncode == 2 and "is read-only" in r.stderr and str(journal) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert journal.read_bytes() == before and not (tmp_path / "blobs" / "trials").exists()
    assert status.returncode == 0, status.stderr  # reading a read-only journal is fine


@pytest.mark.postgres
def test_a_read_only_postgres_journal_is_refused_before_anything_runs(tmp_path, postgres_database_factory):
    import sqlalchemy as sa

    from orchestrator.journal import open_journal

    url = postgres_database_factory()
    open_journal(url).close()  # migrated to head while writable
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    engine.dispose()
    (tmp_path / "m.yaml").write_text(MANIFEST % url)
    r = orch("run", "m.yaml", "--no-progress", "--no-metrics", cwd=tmp_path)
    assert r.returncode == 2 and "is read-only" in r.stderr and "read-only transaction" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    with open_journal(url, create=False) as j:
        assert j.list_experiments() == []  # nothing half-written
