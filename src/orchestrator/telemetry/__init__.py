"""Telemetry: what `orch` measures (catalogue.py), the hooks the core reports through
(recorder.py), the prometheus-client sink (sink.py), the per-node exporter (exporter.py) and the
Grafana dashboards and Prometheus alert rules generated from code (dashboards.py, alerts.py).
Nothing here imports Ray: the actors install the sink in their processes."""
from .recorder import Recorder, current, install

__all__ = ["Recorder", "current", "install"]
