"""`orch submit` to a Ray cluster started with `ray start --head`, with `orch metrics serve` on the
node: the submitted sweep's workers write to the node's metrics directory (set by `orch submit`)
and the node's endpoint exports the trial's counts, as the journal records them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.actors.cluster import free_port
from orchestrator.journal import open_journal
from tests.test_actors_cli import reap_session
from tests.test_telemetry_e2e import _get, tiny_manifest

BIN = Path(sys.executable).parent
STEPS, BATCH = 20, 4
MANIFEST = tiny_manifest("telemetry-cluster", STEPS, BATCH, "resources: {cpus_per_trial: 1}")


def test_a_submitted_sweep_is_exported_by_the_nodes_endpoint(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    node_dir, gcs, port = tmp_path / "node-metrics", free_port(), free_port()
    # token auth needs a token shared out of band; this test's cluster is its own, on loopback ports
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "OPENBLAS_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled", "ORCH_METRICS_DIR": str(node_dir)}
    # its own temp dir: the address file a head writes there (ray_current_cluster) must not send
    # another test's `ray.init()` on this machine to this short-lived cluster
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}", "--block"],
                            cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    exporter = subprocess.Popen([str(BIN / "orch"), "metrics", "serve", "--port", str(port), "--dir", str(node_dir),
                                 "--host", "127.0.0.1"], env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while True:  # the head is up once `orch submit` can connect
            sub = subprocess.run([str(BIN / "orch"), "submit", "m.yaml", "--address", f"127.0.0.1:{gcs}"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=120)
            if sub.returncode == 0 or time.monotonic() > end:
                break
            time.sleep(1)
        assert sub.returncode == 0, sub.stderr[-2000:]
        url = f"sqlite:///{tmp_path / 'journal.db'}"
        end = time.monotonic() + 180
        while True:  # the detached coordinator registers the experiment, then runs it
            with open_journal(url, create=False) as journal:
                states = journal.list_experiments()
            if (states and states[0].status.value == "done") or time.monotonic() > end:
                break
            time.sleep(1)
        (state,) = states
        assert state.status.value == "done", state
        (trial,) = state.trials
        text = _get(f"http://127.0.0.1:{port}/metrics").decode()
    finally:
        exporter.terminate()
        reap_session(head.pid, grace=2)
        reap_session(exporter.pid, grace=5)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    labels = f'{{experiment="{state.experiment_id}",trial="{trial}",variant="sd"}}'
    assert state.experiment_id in sub.stdout
    lines = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("orch_")}
    assert lines[f"orch_train_steps_total{labels}"] == STEPS
    assert lines[f"orch_train_samples_total{labels}"] == STEPS * BATCH
    assert lines[f'orch_trials{{experiment="{state.experiment_id}",state="done"}}'] == 1
