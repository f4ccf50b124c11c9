"""A real `orch run` scraped by a real Prometheus: every dashboard query and every alert rule's
value has data for the run, the endpoint passes `promtool check metrics`, and the exported
values agree with the journal (samples = steps x batch size, trials done, evaluated metrics)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from orchestrator.actors.cluster import free_port
from orchestrator.journal import EventKind, open_journal
from orchestrator.telemetry.alerts import ALERTS
from orchestrator.telemetry.dashboards import DASHBOARDS

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                reason="Debian's prometheus package (make test installs it)")
ORCH = str(Path(sys.executable).with_name("orch"))
INFRA = Path(__file__).resolve().parent.parent / "infra"
STEPS, BATCH = 60, 4


def tiny_manifest(name: str, steps: int, batch: int, *extra: str) -> str:
    """A tiny-random SD sweep on 12 shapes, checkpointing at half way; `extra` lines are appended."""
    return "\n".join([f"name: {name}", "model: {variant: sd, base: tiny-random, resolution: 32}",
                      "data: {train: {kind: shapes, captions: spatial, n: 12}}",
                      f"train: {{steps: {steps}, batch_size: {batch}, lr: 1.0e-3, checkpoint_every: {steps // 2}, "
                      "seed: 1}", "storage: {blobs: ./blobs, journal: sqlite:///./journal.db}", *extra]) + "\n"


MANIFEST = tiny_manifest("telemetry-e2e", STEPS, BATCH, "sweep: {grid: {train.lr: [1.0e-3, 5.0e-4]}}",
                         "resources: {cpus_per_trial: 1, max_concurrent_trials: 1}",
                         f"eval: {{suites: [spatial], samples: 8, every: {STEPS // 2}}}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.fixture
def prometheus(tmp_path):
    """A Prometheus scraping whatever the run lists in sd.json, twice a second, with the rules loaded."""
    port = free_port()
    shutil.copy(INFRA / "prometheus/alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "sd.json").write_text("[]")
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "orch", "file_sd_configs": [{"files": ["sd.json"],
                                                                       "refresh_interval": "1s"}]}]}))
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _get(f"{url}/-/ready")
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("prometheus did not start: " + (tmp_path / "prometheus.log").read_text()[-2000:])
        yield url, tmp_path / "sd.json"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def _query(url: str, expr: str, **params) -> dict:
    kind = "query_range" if "start" in params else "query"
    qs = urllib.parse.urlencode({"query": expr, **params})
    body = json.loads(_get(f"{url}/api/v1/{kind}?{qs}"))
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]


def _has_data(result: list[dict]) -> bool:
    values = [v for s in result for _, v in s.get("values", [s.get("value", [0, "NaN"])])]
    return any(v not in ("NaN", "+Inf", "-Inf") for v in values)


def _scrape_while_running(proc: subprocess.Popen, sd_file: Path) -> str:
    """The endpoint's text as the run goes (the last scrape that had orch's training metrics)."""
    text = ""
    while proc.poll() is None:
        try:
            groups = json.loads(sd_file.read_text())
            if groups:
                body = _get(f"http://{groups[0]['targets'][0]}/metrics").decode()
                if "orch_train_steps_total{" in body:
                    text = body
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    return text


def test_a_scraped_run_feeds_every_panel_and_rule(prometheus, tmp_path):
    url, sd_file = prometheus
    work = tmp_path / "run"
    work.mkdir()
    (work / "m.yaml").write_text(MANIFEST)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "OPENBLAS_NUM_THREADS": "1"}
    started = time.time()
    proc = subprocess.Popen([ORCH, "run", "m.yaml", "--no-progress", "--format", "json", "--metrics-port", "0",
                             "--metrics-sd", str(sd_file)], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    exposition = _scrape_while_running(proc, sd_file)
    out, err = proc.communicate(timeout=300)
    ended = time.time()
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(sd_file.read_text()) == [], "the run's endpoint stays listed after it ended"

    # the exposition format, as Prometheus' own linter reads it
    assert exposition, "never scraped the endpoint with training metrics on it"
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    with open_journal(f"sqlite:///{work / 'journal.db'}", create=False) as journal:
        (state,) = journal.list_experiments()
        eid = state.experiment_id
        done = [t for t in state.trials.values() if t.status.value == "done"]
        evaluated = journal.events(eid, kinds=[EventKind.EVALUATED])
        done_events = journal.events(eid, kinds=[EventKind.DONE])
    assert len(done) == 2

    window = {"start": started, "end": ended, "step": "1"}

    def substitute(expr: str) -> str:
        return expr.replace("$experiment", eid).replace("$trial", ".*").replace("$__rate_interval", "5s")

    empty = []
    for board in DASHBOARDS:
        for panel, target in board.targets():
            data = _query(url, substitute(target.expr), **window)  # parses (status success) ...
            if target.needs is None and not _has_data(data["result"]):  # ... and shows the run
                empty.append(f"{board.uid} / {panel.title}: {target.expr}")
    for alert in ALERTS:
        _query(url, alert.expr, **window)
        if not _has_data(_query(url, alert.value, **window)["result"]):
            empty.append(f"alert {alert.name}: {alert.value}")
    assert not empty, "no data for:\n" + "\n".join(empty)

    # the values agree with the journal, at the end of the run
    at = {"time": ended}

    def by_trial(expr: str) -> dict[str, float]:
        return {s["metric"].get("trial", ""): float(s["value"][1]) for s in _query(url, expr, **at)["result"]}

    steps = {e.trial_id: e.payload["step"] for e in done_events if e.trial_id}
    assert by_trial(f'max_over_time(orch_train_samples_total{{experiment="{eid}"}}[5m])') == \
        {tid: float(s * BATCH) for tid, s in steps.items()}
    assert by_trial(f'max_over_time(orch_train_steps_total{{experiment="{eid}"}}[5m])') == \
        {tid: float(s) for tid, s in steps.items()}
    assert by_trial(f'last_over_time(orch_trials{{experiment="{eid}",state="done"}}[5m])') == {"": 2.0}
    assert by_trial(f'last_over_time(orch_trial_finishes_total{{experiment="{eid}"}}[5m])') == {"": 2.0}
    judged = {"final": {e.trial_id: e.payload["metrics"] for e in evaluated if e.payload["weights"].endswith("/model")},
              "base": {e.trial_id: e.payload["metrics"] for e in evaluated if e.payload.get("base")}}
    for weights, recorded in judged.items():
        assert set(recorded) == set(steps), weights
        for metric in ("accuracy", "object_accuracy"):
            exported = by_trial(f'last_over_time(orch_eval_metric{{experiment="{eid}",weights="{weights}",'
                                f'suite="spatial",metric="{metric}"}}[5m])')
            assert exported == {tid: m[f"spatial.{metric}"] for tid, m in recorded.items()}, (weights, metric)
