"""A small typed builder for Grafana dashboards: targets, panels, dashboards, rendered to the JSON
Grafana provisions (schema 39). dashboards.py says what the dashboards show."""
from __future__ import annotations

from dataclasses import dataclass

DATASOURCE = {"type": "prometheus", "uid": "orch-prometheus"}  # the uid the provisioned datasource has
WIDTH = 24  # Grafana's grid


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    needs: str | None = None  # "cuda": only has data where trainers run on a GPU

    def render(self, ref: str) -> dict:
        return {"datasource": DATASOURCE, "expr": self.expr, "legendFormat": self.legend or "__auto", "refId": ref}


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | bargauge
    width: int = 12
    height: int = 8
    description: str = ""

    def render(self, pid: int, x: int, y: int) -> dict:
        out = {"id": pid, "type": self.kind, "title": self.title, "description": self.description,
               "datasource": DATASOURCE, "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
               "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
               "targets": [t.render(chr(ord("A") + i)) for i, t in enumerate(self.targets)]}
        if self.kind == "stat":
            out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        if self.kind == "bargauge":
            out["options"] = {"displayMode": "basic", "orientation": "horizontal",
                              "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        return out


@dataclass(frozen=True)
class Variable:
    name: str
    query: str          # label_values(...)
    multi: bool = True

    def render(self) -> dict:
        return {"name": self.name, "label": self.name, "type": "query", "datasource": DATASOURCE,
                "query": {"query": self.query, "refId": f"{self.name}-values"}, "definition": self.query,
                "refresh": 2, "multi": self.multi, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = ("orch",)
    refresh: str = "10s"
    time_from: str = "now-1h"

    def render(self) -> dict:
        panels, x, y, row_h = [], 0, 0, 0
        for i, p in enumerate(self.panels, 1):  # left to right, wrapping at the grid's width
            if x + p.width > WIDTH:
                x, y, row_h = 0, y + row_h, 0
            panels.append(p.render(i, x, y))
            x, row_h = x + p.width, max(row_h, p.height)
        return {"uid": self.uid, "title": self.title, "tags": list(self.tags), "timezone": "browser",
                "schemaVersion": 39, "version": 1, "editable": False, "graphTooltip": 1, "refresh": self.refresh,
                "time": {"from": self.time_from, "to": "now"}, "panels": panels,
                "templating": {"list": [v.render() for v in self.variables]}, "annotations": {"list": []}}

    def targets(self) -> list[tuple[Panel, Target]]:
        return [(p, t) for p in self.panels for t in p.targets]
