"""Scene graphs in GQA's JSON format.

GQA's ``*_sceneGraphs.json`` is ``{image_id: {width, height, [location], [weather],
objects: {obj_id: {name, x, y, w, h, attributes: [str], relations: [{name, object}]}}}}``.
The same types carry the shapes world's graphs, so one caption builder serves both.
Unknown keys are kept in ``extra`` so a load/dump round trip loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

_OBJECT_KEYS = ("name", "x", "y", "w", "h", "attributes", "relations")


@dataclass(frozen=True)
class Relation:
    name: str
    object: str  # id of the target object

    def to_gqa(self) -> dict[str, str]:
        return {"name": self.name, "object": self.object}


@dataclass
class SGObject:
    name: str
    x: float
    y: float
    w: float
    h: float
    attributes: list[str] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    @classmethod
    def from_gqa(cls, d: Mapping[str, Any]) -> "SGObject":
        if "name" not in d:
            raise ValueError(f"scene-graph object without a name: {dict(d)!r}")
        rels = [Relation(str(r["name"]), str(r["object"])) for r in d.get("relations", [])]
        return cls(
            name=str(d["name"]),
            x=d.get("x", 0), y=d.get("y", 0), w=d.get("w", 0), h=d.get("h", 0),
            attributes=[str(a) for a in d.get("attributes", [])],
            relations=rels,
            extra={k: v for k, v in d.items() if k not in _OBJECT_KEYS},
        )

    def to_gqa(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "x": self.x, "y": self.y, "w": self.w, "h": self.h,
            "attributes": list(self.attributes),
            "relations": [r.to_gqa() for r in self.relations],
        }
        d.update(self.extra)
        return d


def natural_key(obj_id: str) -> tuple[int, int, str]:
    """Numeric ids (GQA's) sort by value, others by text: a stable, input-order-free order."""
    return (0, int(obj_id), "") if obj_id.isdigit() else (1, 0, obj_id)


@dataclass
class SceneGraph:
    width: float
    height: float
    objects: dict[str, SGObject]
    image_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. GQA's location, weather

    def ids(self) -> list[str]:
        """Object ids in the canonical (deterministic) order."""
        return sorted(self.objects, key=natural_key)

    def relations(self) -> list[tuple[str, str, str]]:
        """(subject, relation, object) triples in canonical order; dangling targets dropped."""
        out = []
        for sid in self.ids():
            for r in self.objects[sid].relations:
                if r.object in self.objects:
                    out.append((sid, r.name, r.object))
        return out

    @classmethod
    def from_gqa(cls, d: Mapping[str, Any], image_id: str | None = None) -> "SceneGraph":
        objs = d.get("objects")
        if not isinstance(objs, Mapping):
            raise ValueError(f"scene graph {image_id!r} has no 'objects' mapping")
        return cls(
            width=d.get("width", 0), height=d.get("height", 0),
            objects={str(k): SGObject.from_gqa(v) for k, v in objs.items()},
            image_id=image_id,
            extra={k: v for k, v in d.items() if k not in ("width", "height", "objects")},
        )

    def to_gqa(self) -> dict[str, Any]:
        d: dict[str, Any] = {"width": self.width, "height": self.height}
        d.update(self.extra)
        d["objects"] = {k: o.to_gqa() for k, o in self.objects.items()}
        return d


def parse_scene_graphs(data: Mapping[str, Any]) -> dict[str, SceneGraph]:
    """Parse the top-level ``{image_id: graph}`` mapping of a GQA scene-graph file."""
    return {str(k): SceneGraph.from_gqa(v, image_id=str(k)) for k, v in data.items()}


def load_scene_graphs(path: str | Path) -> dict[str, SceneGraph]:
    with open(path, encoding="utf-8") as f:
        return parse_scene_graphs(json.load(f))


def dumps_scene_graphs(graphs: Iterable[SceneGraph] | Mapping[str, SceneGraph]) -> str:
    """Serialise to GQA's layout; byte-stable for equal input (insertion order, no sorting)."""
    items = graphs.items() if isinstance(graphs, Mapping) else ((g.image_id, g) for g in graphs)
    out: dict[str, Any] = {}
    for key, g in items:
        if key is None:
            raise ValueError("every scene graph needs an image_id to be written")
        out[str(key)] = g.to_gqa()
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))
