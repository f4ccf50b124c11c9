"""The prometheus-client sink: the Recorder hooks as the catalogue's metrics, in multiprocess mode.

Every process of a node writes its values to memory-mapped files in one directory
(PROMETHEUS_MULTIPROC_DIR, inherited from the node's Ray processes); the node's exporter
(exporter.py) sums them at scrape time. A trainer's counters so outlive its process: the last
steps of a trial whose actor was already killed are still in the next scrape. Gauges keep the
most recent value written by any process.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping

from .catalogue import METRICS, TRIAL
from .recorder import Recorder, current, install

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch to multiprocess mode
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _build():
    import prometheus_client as pc

    out = {}
    for m in METRICS:
        kw = {"labelnames": m.labels, "registry": None}  # exported by the exporter's collector, not REGISTRY
        if m.kind == "counter":  # prometheus-client appends _total itself
            out[m.name] = pc.Counter(m.name.removesuffix("_total"), m.help, **kw)
        elif m.kind == "gauge":
            out[m.name] = pc.Gauge(m.name, m.help, multiprocess_mode="mostrecent", **kw)
        else:
            out[m.name] = pc.Histogram(m.name, m.help, buckets=m.buckets, **kw)
    return out


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PrometheusRecorder(Recorder):
    enabled = True

    def __init__(self) -> None:
        self.m = _build()
        self.trial: dict[str, str] | None = None
        self._experiments: set[str] = set()
        for name in ("orch_blob_retries_total", "orch_blob_integrity_errors_total"):
            self.m[name]  # unlabelled: exported (as 0) from the start, so alerts on them have data

    def _t(self, name: str):
        return self.m[name].labels(**self.trial)

    # ---- trainer
    def bind(self, **labels: str) -> None:
        """The trial this process trains; its counters are created (at 0) now, so a rate or an
        alert over them has data from the first scrape."""
        self.trial = {k: labels.get(k, "") for k in TRIAL}
        for m in METRICS:
            if m.labels == TRIAL and m.kind != "gauge":
                self._t(m.name)

    def train_step(self, *, seconds: float, data_wait_s: float, samples: int) -> None:
        if self.trial is None:
            return
        self._t("orch_train_steps_total").inc()
        self._t("orch_train_samples_total").inc(samples)
        self._t("orch_train_step_seconds").observe(seconds)
        if data_wait_s:
            self._t("orch_train_data_wait_seconds_total").inc(data_wait_s)
        self._t("orch_train_last_step_timestamp_seconds").set(time.time())

    def train_state(self, *, loss: float, lr: float, grad_norm: float | None, samples_per_s: float,
                    cuda: tuple[int, int, float | None] | None = None) -> None:
        if self.trial is None:
            return
        self._t("orch_train_loss").set(loss)
        self._t("orch_train_learning_rate").set(lr)
        if grad_norm is not None:
            self._t("orch_train_grad_norm").set(grad_norm)
        self._t("orch_train_samples_per_second").set(samples_per_s)
        rss = _rss_bytes()
        if rss is not None:
            self._t("orch_train_resident_memory_bytes").set(rss)
        if cuda is not None:
            allocated, reserved, utilization = cuda
            self._t("orch_cuda_memory_allocated_bytes").set(allocated)
            self._t("orch_cuda_memory_reserved_bytes").set(reserved)
            if utilization is not None:
                self._t("orch_gpu_utilization_ratio").set(utilization)

    def train_active(self, active: bool) -> None:
        if self.trial is not None:
            self._t("orch_train_active").set(1 if active else 0)

    def checkpoint_saved(self, *, seconds: float, nbytes: int) -> None:
        if self.trial is not None:
            self._t("orch_checkpoint_save_seconds").observe(seconds)
            self._t("orch_checkpoint_written_bytes_total").inc(nbytes)

    def checkpoint_failed(self) -> None:
        if self.trial is not None:
            self._t("orch_checkpoint_failures_total").inc()

    def trainer_restarted(self) -> None:
        if self.trial is not None:
            self._t("orch_train_restarts_total").inc()

    # ---- evaluator
    def _experiment(self, experiment: str) -> None:
        if experiment not in self._experiments:  # failure counters exported at 0 from the start
            self._experiments.add(experiment)
            self.m["orch_eval_failures_total"].labels(experiment=experiment)

    def evaluated(self, *, experiment: str, trial: str, weights: str, suite: str, seconds: float | None,
                  metrics: Mapping[str, float]) -> None:
        self._experiment(experiment)
        if seconds is not None:
            self.m["orch_eval_seconds"].labels(experiment=experiment, suite=suite).observe(seconds)
        gauge = self.m["orch_eval_metric"]
        for name, value in metrics.items():
            gauge.labels(experiment=experiment, trial=trial, suite=suite, metric=name, weights=weights).set(value)

    def eval_failed(self, *, experiment: str) -> None:
        self._experiment(experiment)
        self.m["orch_eval_failures_total"].labels(experiment=experiment).inc()

    # ---- coordinator
    def sweep(self, *, experiment: str, total: int, by_state: Mapping[str, int], queued: int) -> None:
        if experiment not in self._experiments:
            self._experiment(experiment)
            for name in ("orch_trial_starts_total", "orch_trial_finishes_total", "orch_trial_failures_total",
                         "orch_trial_retries_total", "orch_trial_stops_total"):
                self.m[name].labels(experiment=experiment)
        self.m["orch_sweep_trials"].labels(experiment=experiment).set(total)
        self.m["orch_queue_depth"].labels(experiment=experiment).set(queued)
        for state, n in by_state.items():
            self.m["orch_trials"].labels(experiment=experiment, state=state).set(n)

    def trial_event(self, *, experiment: str, event: str) -> None:
        names = {"start": "orch_trial_starts_total", "finish": "orch_trial_finishes_total",
                 "failure": "orch_trial_failures_total", "retry": "orch_trial_retries_total",
                 "stop": "orch_trial_stops_total"}
        self.m[names[event]].labels(experiment=experiment).inc()

    # ---- journal and blob store
    def journal_appended(self, *, backend: str, events: int, seconds: float) -> None:
        self.m["orch_journal_appends_total"].labels(backend=backend).inc(events)
        self.m["orch_journal_append_seconds"].labels(backend=backend).observe(seconds)

    def blob_transfer(self, *, backend: str, op: str, nbytes: int) -> None:
        self.m["orch_blob_operations_total"].labels(backend=backend, op=op).inc()
        name = "orch_blob_written_bytes_total" if op == "put" else "orch_blob_read_bytes_total"
        self.m[name].labels(backend=backend).inc(nbytes)

    def blob_retry(self) -> None:
        self.m["orch_blob_retries_total"].inc()

    def blob_integrity_error(self) -> None:
        self.m["orch_blob_integrity_errors_total"].inc()


def install_from_env() -> Recorder:
    """In a process whose node exports metrics (PROMETHEUS_MULTIPROC_DIR set), the Prometheus sink
    (once per process); elsewhere the no-op default stays. Returns the sink in use."""
    rec = current()
    if rec.enabled or not os.environ.get(DIR_ENV):
        return rec
    os.makedirs(os.environ[DIR_ENV], exist_ok=True)
    install(PrometheusRecorder())
    return current()
