"""THE MULTI-NODE TEST (`-m multinode`): a Ray head and a second node as separate `ray start`
processes on this machine, the journal on PostgreSQL, the blobs on Azurite, a sweep submitted with
`orch submit --address`. Each node declares one (fake) GPU and each trial asks for one, so the two
trials land one per node. The worker node is SIGKILLed, processes and all, once its trial has a
checkpoint: Ray notices the dead node, restarts the trainer on the head when its GPU frees, and the
retried `train` resumes from the last checkpoint. The journal must show exactly that: both trials
done, each attempt once, the lost one placed twice and resumed from a step > 0, no checkpoint
written twice or missed, no duplicate idempotency key.

Ray's health checks are tightened for the test's head only (the default takes ~15 s to call a
node dead)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

from orchestrator.actors.cluster import free_port  # noqa: E402
from orchestrator.journal import TrialStatus, open_journal  # noqa: E402
from tests.test_actors_cli import reap_session  # noqa: E402

pytestmark = [pytest.mark.multinode, pytest.mark.postgres, pytest.mark.azurite]
BIN = Path(sys.executable).parent
SRC = Path(__file__).resolve().parents[1] / "src"
STEPS, EVERY = 60, 5
WORKER_TAG = "orch_test_worker"  # the second node's own resource: its trials say they ran there
# The GCS calls a node dead after `threshold` missed checks `period` apart (default 3 s x 5).
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000"}


def manifest(container: str, journal_url: str) -> str:
    return "\n".join([
        "name: multinode", "model: {variant: sd, base: tiny-random, resolution: 32}",
        "data: {train: {kind: shapes, captions: spatial, n: 12}}",
        f"train: {{steps: {STEPS}, batch_size: 4, lr: 1.0e-3, checkpoint_every: {EVERY}, seed: 1}}",
        "sweep: {grid: {train.lr: [1.0e-3, 5.0e-4]}}",
        "resources: {gpus_per_trial: 1, cpus_per_trial: 1}",
        f"storage: {{blobs: 'az://{container}/runs', journal: '{journal_url}'}}", ""])


def ray_start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A Ray node in its own session (so it can be killed whole), every port of it explicit: other
    Rays on this machine hold the defaults (and Redis 6379). Its output goes to `log`."""
    ports = {"--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"}
    with log.open("w") as out:
        return subprocess.Popen([str(BIN / "ray"), "start", *args, *(f"{p}={free_port()}" for p in sorted(ports)),
                                 "--disable-usage-stats", "--block"],
                                cwd=log.parent, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def started(log: Path) -> bool:
    """`ray start` says so once its node has registered with the head."""
    return "Ray runtime started" in log.read_text(errors="replace")


def wait_for(predicate, timeout: float, what: str, every: float = 0.2, shown=lambda: ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}{shown()}")


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie (its parent, the raylet, was killed before reaping it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def journal_lines(journal, eid: str) -> str:
    """What the journal says so far, for a timeout's message."""
    return "".join(f"\n  {e.trial_id} {e.kind.value} {json.dumps(e.payload)[:300]}" for e in journal.events(eid))


def test_a_sweep_survives_the_loss_of_a_worker_node(tmp_path, postgres_database_factory, azurite_env):
    journal_url = postgres_database_factory()
    container = f"mn{os.getpid()}x{int(time.time())}"
    (tmp_path / "m.yaml").write_text(manifest(container, journal_url))
    gcs = free_port()
    env = {**os.environ, **azurite_env, **FAST_HEALTH, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "OPENBLAS_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "ORCH_METRICS_DIR": str(tmp_path / "metrics"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short (socket paths), and ours alone
    head = ray_start(["--head", f"--port={gcs}", "--num-cpus=1", "--num-gpus=1", "--include-dashboard=false",
                      f"--ray-client-server-port={free_port()}", f"--temp-dir={ray_tmp}"], env, tmp_path / "head.log")
    # The worker node runs in a folder of its own, and the manifest is deleted once submitted:
    # trials travel by value, so no node may need the head's copy of the file.
    (tmp_path / "worker-node").mkdir()
    worker = ray_start([f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--num-gpus=1",
                        f"--resources={json.dumps({WORKER_TAG: 1})}", f"--temp-dir={ray_tmp}"], env,
                       tmp_path / "worker-node" / "worker.log")
    try:
        # Both nodes up first, so both trials start at once. wait_for calls its lambdas before it
        # returns, so they read this iteration's log.
        for log in (tmp_path / "head.log", tmp_path / "worker-node" / "worker.log"):
            wait_for(lambda: started(log), 60, f"the node logging to {log.name}",  # noqa: B023
                     shown=lambda: log.read_text()[-2000:])  # noqa: B023
        def submitted():
            sub = subprocess.run([str(BIN / "orch"), "submit", "m.yaml", "--address", f"127.0.0.1:{gcs}"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            return sub if sub.returncode == 0 else None
        wait_for(submitted, 60, "`orch submit` to reach the head", every=1)
        (tmp_path / "m.yaml").unlink()  # the sweep runs from its plan by value
        journal = open_journal(journal_url, create=False)
        eid = wait_for(lambda: [s.experiment_id for s in journal.list_experiments()], 60, "the experiment")[0]

        def on_worker():  # the trial placed on the worker node, once it has a checkpoint
            for e in journal.events(eid, kinds=["placed"]):
                if WORKER_TAG in e.payload["tags"] and journal.events(eid, e.trial_id, kinds=["checkpointed"]):
                    return e
            return None
        lost = wait_for(on_worker, 90, "a checkpoint of the trial on the worker node", every=0.1,
                        shown=lambda: journal_lines(journal, eid))
        reap_session(worker.pid)  # SIGKILL: raylet, agents and the trainer, mid-trial
        assert gone(lost.payload["pid"])  # the trainer was among them
        wait_for(lambda: journal.experiment_state(eid).status.value == "done", 100, "the sweep to finish", every=0.5,
                 shown=lambda: journal_lines(journal, eid))
        state = journal.experiment_state(eid)
        events = journal.events(eid)
        journal.close()
    finally:
        reap_session(worker.pid)
        reap_session(head.pid, grace=2)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    keys = [e.idempotency_key for e in events]
    assert len(keys) == len(set(keys))
    assert state.counts()[TrialStatus.DONE] == 2
    expected = list(range(EVERY, STEPS + 1, EVERY))
    for tid in state.trials:
        mine = [e for e in events if e.trial_id == tid]
        kinds = Counter(e.kind.value for e in mine)
        assert (kinds["queued"], kinds["running"], kinds["done"], kinds["failed"]) == (1, 1, 1, 0), kinds
        assert sorted(e.payload["step"] for e in mine if e.kind.value == "checkpointed") == expected  # each once
        placed = [e.payload for e in mine if e.kind.value == "placed"]
        done = next(e.payload for e in mine if e.kind.value == "done")
        assert done["step"] == STEPS
        if tid != lost.trial_id:
            assert [(p["head"], p["gpu_ids"]) for p in placed] == [(True, ["0"])] and not done["resumed_from"]
            continue
        first, again = placed  # the worker's, then the head's after the restart
        assert WORKER_TAG in first["tags"] and not first["head"] and again["head"]
        assert first["node_id"] != again["node_id"] and again["gpu_ids"] == ["0"] and again["device"] == "cpu"
        assert done["resumed_from"] > 0 and done["steps_run"] == STEPS - done["resumed_from"]
