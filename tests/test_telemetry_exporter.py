"""A node's endpoint (exporter.py) over what processes wrote with the sink (sink.py): counters of
processes that have exited are still summed, only orch's families are served with their own help,
`promtool check metrics` accepts the text; `orch run`'s endpoint falls back from a taken port and
waits for one last scrape."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from orchestrator.telemetry.catalogue import BY_NAME
from orchestrator.telemetry.exporter import EmbeddedMetrics, MetricsServer
from orchestrator.telemetry.sink import DIR_ENV

WRITER = """
import sys
from orchestrator.telemetry.sink import install_from_env
import prometheus_client
rec = install_from_env()
rec.bind(experiment="e1", trial="t1", variant="sd")
for _ in range(int(sys.argv[1])):
    rec.train_step(seconds=0.02, data_wait_s=0.001, samples=4)
rec.train_state(loss=float(sys.argv[2]), lr=1e-3, grad_norm=None, samples_per_s=100.0)
rec.blob_transfer(backend="file", op="put", nbytes=1000)
prometheus_client.Gauge("not_orch_metric", "a family Ray's processes would write", multiprocess_mode="max").set(1)
"""


def _write(directory, steps: int, loss: float) -> None:
    """One process that records and exits, as a trainer actor killed after its trial."""
    env = {**os.environ, DIR_ENV: str(directory)}
    subprocess.run([sys.executable, "-c", WRITER, str(steps), str(loss)], env=env, check=True, timeout=60)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, series: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    return float(line.split()[-1])


def test_counters_of_exited_processes_are_summed_and_only_orch_is_served(tmp_path):
    _write(tmp_path, 3, 0.5)
    _write(tmp_path, 2, 0.25)  # the same trial's trainer, restarted
    server = MetricsServer(tmp_path, 0, "127.0.0.1")
    try:
        text = _scrape(server.port)
    finally:
        server.close()
    labels = '{experiment="e1",trial="t1",variant="sd"}'
    assert _value(text, f"orch_train_steps_total{labels}") == 5
    assert _value(text, f"orch_train_samples_total{labels}") == 20
    assert _value(text, f"orch_train_loss{labels}") == 0.25  # the most recent write wins
    assert _value(text, 'orch_blob_written_bytes_total{backend="file"}') == 2000
    assert _value(text, "orch_blob_retries_total") == 0  # exported from the start: alerts have data
    assert "not_orch_metric" not in text
    assert f"# HELP orch_train_steps_total {BY_NAME['orch_train_steps_total'].help}" in text
    promtool = shutil.which("promtool")
    if promtool:
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_taken_port_falls_back_and_the_sd_file_follows(tmp_path):
    before = os.environ.get(DIR_ENV)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sd = tmp_path / "targets.json"
        with EmbeddedMetrics(port, sd) as served:
            assert served.note and str(port) in served.note and served.server.port != port
            assert json.loads(sd.read_text())[0]["targets"] == [f"127.0.0.1:{served.server.port}"]
            assert os.environ[DIR_ENV] == served.directory  # what the run's Ray workers inherit
            directory = served.directory
        assert json.loads(sd.read_text()) == []
        assert os.environ.get(DIR_ENV) == before and not os.path.exists(directory)


def test_the_end_of_a_run_waits_for_one_more_scrape(tmp_path):
    server = MetricsServer(tmp_path, 0, "127.0.0.1")
    try:
        t0 = time.monotonic()
        assert server.wait_for_scrape() is False and time.monotonic() - t0 < 0.5  # nobody scrapes: no wait
        _scrape(server.port)
        _scrape(server.port)
        done = time.monotonic()
        later = threading.Timer(0.5, _scrape, args=(server.port,))
        later.start()
        assert server.wait_for_scrape(after=done) is True
        assert time.monotonic() - done >= 0.4
        later.join()
    finally:
        server.close()


def test_without_a_metrics_directory_the_actors_keep_the_no_op(monkeypatch):
    from orchestrator.telemetry import current
    from orchestrator.telemetry.sink import install_from_env

    monkeypatch.delenv(DIR_ENV, raising=False)
    assert install_from_env() is current() and not current().enabled
