"""The ops files under infra/: generated dashboards and rules are what the code renders, the
Prometheus configs and rules load in a real promtool, and the alert rules' unit tests pass."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.telemetry import Recorder, current
from orchestrator.telemetry.alerts import ALERTS
from orchestrator.telemetry.catalogue import METRICS
from orchestrator.telemetry.dashboards import DASHBOARDS
from orchestrator.telemetry.generate import rendered

INFRA = Path(__file__).resolve().parent.parent / "infra"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus; make test installs it)")


def test_committed_files_are_the_generated_ones():
    for rel, text in rendered().items():
        path = INFRA / rel
        assert path.is_file(), f"{path} is missing: run python -m orchestrator.telemetry.generate infra"
        assert path.read_text() == text, f"{path} differs from the code: regenerate it (see infra/README.md)"
    on_disk = {p.name for p in (INFRA / "grafana/dashboards").glob("*.json")}
    assert on_disk == {f"{d.uid}.json" for d in DASHBOARDS}, "a dashboard file no code renders"


def test_dashboards_cover_what_the_issue_lists_and_only_known_metrics():
    known = {m.name for m in METRICS}
    for d in DASHBOARDS:
        rendered_json = d.render()
        assert [p["id"] for p in rendered_json["panels"]] == list(range(1, len(d.panels) + 1))
        for panel, target in d.targets():
            used = {w for w in _words(target.expr) if w.startswith("orch_")}
            bases = {w.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for w in used}
            assert bases <= known, f"{d.uid}/{panel.title}: unknown metric in {target.expr}"
    titles = {d.uid: {p.title for p in d.panels} for d in DASHBOARDS}
    assert {"Trials by state", "Progress (done or stopped / total)", "Failed trials"} <= titles["orch-sweep"]
    assert {"Loss", "Learning rate", "Samples / s", "Step time quantiles", "Memory"} <= titles["orch-trial"]


def _words(expr: str) -> set[str]:
    import re

    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))


def test_metric_names_follow_the_conventions():
    for m in METRICS:
        assert m.name.startswith("orch_"), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not {"step", "key", "path", "error"} & set(m.labels), f"{m.name}: unbounded label"


def test_the_default_recorder_drops_everything():
    rec = current()
    assert type(rec) is Recorder and not rec.enabled
    rec.bind(experiment="e", trial="t", variant="sd")
    rec.train_step(seconds=0.1, data_wait_s=0.0, samples=4)  # no sink: nothing raises, nothing kept


@needs_promtool
def test_promtool_accepts_the_configs_and_rules():
    rules = INFRA / "prometheus/alerts.yml"
    subprocess.run([PROMTOOL, "check", "rules", str(rules)], check=True, capture_output=True)
    for config in ("prometheus-local.yml", "prometheus-cluster.yml"):
        subprocess.run([PROMTOOL, "check", "config", str(INFRA / "prometheus" / config)], check=True,
                       capture_output=True)
    names = [r["alert"] for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"]]
    assert names == [a.name for a in ALERTS]


@needs_promtool
def test_alert_rules_unit_tests(tmp_path):
    """promtool's own rule tests: each alert fires when it should and not otherwise; and a rule
    loosened on purpose (the stall threshold raised) makes them fail, so they test something."""
    ok = subprocess.run([PROMTOOL, "test", "rules", str(INFRA / "prometheus/alerts_test.yml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tested = {t["alertname"] for case in yaml.safe_load((INFRA / "prometheus/alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert tested == {a.name for a in ALERTS}
    (tmp_path / "alerts.yml").write_text((INFRA / "prometheus/alerts.yml").read_text().replace("> 600", "> 6000"))
    shutil.copy(INFRA / "prometheus/alerts_test.yml", tmp_path / "alerts_test.yml")
    bad = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "alerts_test.yml")], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "OrchTrialStalled" in bad.stdout + bad.stderr


def test_grafana_provisioning_names_the_dashboards_datasource():
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    for path in (INFRA / "grafana/dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert {p["datasource"]["uid"] for p in board["panels"]} == {uid}
    provider = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/orch.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
