"""Outages are waited out: a blob store gone for 30 s while a trial uploads its checkpoints does
not fail the trial (real Azurite, stopped cleanly and started again); one gone longer than the
budget fails it naming the store; a PostgreSQL journal whose connections are terminated
(pg_terminate_backend on the test's own database) carries on."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa
import torch

from orchestrator.journal import Event, open_journal
from orchestrator.storage import open_store
from orchestrator.training import LoopConfig, RunControl, train_trial
from orchestrator.training.checkpoint import CheckpointStore

MANIFEST = """\
name: outage
model: {{variant: sd, base: tiny-random, resolution: 32}}
data: {{train: {{kind: shapes, n: 8}}}}
train: {{steps: 6, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 0}}
storage: {{blobs: "az://{container}/runs", journal: sqlite:///./journal.db}}
"""


def outage_after_first_checkpoint(azurite, seconds: float, seen: list):
    """An on_metrics callback: when the first checkpoint has landed, Azurite goes away for
    `seconds` (in another thread, so training runs on into the outage)."""
    def on_metrics(m):
        seen.append(m.step)
        if m.checkpoint and not any(t.name == "outage" for t in threading.enumerate()):
            def outage():
                azurite.stop()
                time.sleep(seconds)
                azurite.start()
            threading.Thread(target=outage, name="outage", daemon=True).start()
            time.sleep(1.0)  # let it go down before the next upload starts
    return on_metrics


@pytest.mark.azurite
@pytest.mark.timeout(240)
def test_a_30_second_blob_outage_is_waited_out(tmp_path, azurite_env, azurite, caplog):
    torch.set_num_threads(1)
    container = f"t-{uuid.uuid4().hex[:12]}"
    (tmp_path / "m.yaml").write_text(MANIFEST.format(container=container))
    seen: list = []
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="orchestrator.storage.retry"):
        result = train_trial(tmp_path / "m.yaml", "0", config=LoopConfig(num_threads=1),
                             control=RunControl(on_metrics=outage_after_first_checkpoint(azurite, 30, seen)))
    assert result.finished and result.resumed_from is None and seen == [1, 2, 3, 4, 5, 6]
    assert time.monotonic() - started >= 30  # the outage was there, and was sat out
    assert any("retrying" in r.getMessage() for r in caplog.records)
    store = open_store(f"az://{container}/runs")
    ckpts = CheckpointStore(store, f"trials/{result.checkpoint.split('/')[1]}/checkpoints")
    assert [r.step for r in ckpts.refs()] == [6, 4, 2]
    for ref in ckpts.refs():  # every checkpoint verifies (the store checks its sha256 on read)
        store.get(ref.key)
    assert store.exists(f"{result.model_prefix}/model_index.json")


@pytest.mark.azurite
@pytest.mark.timeout(240)
def test_an_outage_longer_than_the_budget_fails_naming_the_store(tmp_path, azurite_env, azurite, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("ORCH_BLOB_OUTAGE_S", "3")
    container = f"t-{uuid.uuid4().hex[:12]}"
    (tmp_path / "m.yaml").write_text(MANIFEST.format(container=container))
    with pytest.raises(Exception) as err:
        train_trial(tmp_path / "m.yaml", "0", config=LoopConfig(num_threads=1),
                    control=RunControl(on_metrics=outage_after_first_checkpoint(azurite, 15, [])))
    assert container in str(err.value), str(err.value)
    for _ in range(60):  # Azurite back for the next test
        if not any(t.name == "outage" for t in threading.enumerate()):
            break
        time.sleep(0.5)


@pytest.mark.postgres
def test_postgres_connections_terminated_mid_run_are_reopened(postgres_database_factory, postgres_admin_url):
    url = postgres_database_factory()
    dbname = sa.engine.make_url(url).database
    with open_journal(url) as j:
        j.register_experiment("e1", "drop", "{}")
        j.register_trials("e1", {"t1": {}})
        j.append(Event.for_trial("e1", "t1", "queued", "t1/queued"))
        admin = sa.create_engine(sa.engine.make_url(postgres_admin_url).set(drivername="postgresql+psycopg"))
        with admin.connect() as conn:
            killed = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": dbname}).scalar()
        admin.dispose()
        assert killed >= 1  # the journal's pooled connection was cut
        j.append(Event.for_trial("e1", "t1", "running", "t1/running"))  # a fresh connection, no error
        assert j.trial_state("t1", "e1").status.value == "running"
