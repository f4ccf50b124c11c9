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
