"""The Prometheus alert rules, as code: each is a value and the condition on it, so the test can
check that every value has data on a real run (a healthy run does not fire them) and promtool's
unit tests (infra/prometheus/alerts_test.yml) check when each fires."""
from __future__ import annotations

from dataclasses import dataclass

ACTIVE = "max by (experiment, trial) (orch_train_active) == 1"


@dataclass(frozen=True)
class Alert:
    name: str
    value: str          # PromQL with data whenever the thing watched exists
    condition: str      # appended to the value: "> 600"
    for_: str
    summary: str
    severity: str = "warning"

    @property
    def expr(self) -> str:
        return f"({self.value}) {self.condition}"

    def render(self) -> dict:
        return {"alert": self.name, "expr": self.expr, "for": self.for_, "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary}}


ALERTS = (
    Alert("OrchTrialStalled",
          f"time() - max by (experiment, trial) (orch_train_last_step_timestamp_seconds) and on (experiment, trial) "
          f"{ACTIVE}", "> 600", "1m",
          "Trial {{ $labels.trial }} of {{ $labels.experiment }} has completed no step for over 10 minutes",
          "critical"),
    Alert("OrchCheckpointFailures",
          "sum by (experiment, trial) (increase(orch_checkpoint_failures_total[15m]))", "> 0", "0m",
          "Checkpoint saves of trial {{ $labels.trial }} ({{ $labels.experiment }}) are failing", "critical"),
    Alert("OrchEvaluationFailing",
          "sum by (experiment) (increase(orch_eval_failures_total[30m]))", "> 0", "0m",
          "Evaluations of experiment {{ $labels.experiment }} are failing"),
    Alert("OrchThroughputDrop",
          "max by (experiment, trial) (orch_train_samples_per_second) / max by (experiment, trial) "
          f"(max_over_time(orch_train_samples_per_second[30m])) and on (experiment, trial) {ACTIVE}", "< 0.5", "5m",
          "Trial {{ $labels.trial }} trains at under half its best throughput of the last 30 minutes"),
    Alert("OrchBlobRetriesSpiking",
          "sum(rate(orch_blob_retries_total[5m]))", "> 0.2", "5m",
          "The blob store is being retried {{ $value | humanize }} times a second"),
)


def rule_groups() -> dict:
    return {"groups": [{"name": "orch", "rules": [a.render() for a in ALERTS]}]}
