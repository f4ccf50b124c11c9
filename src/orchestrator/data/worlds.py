"""Named shapes worlds: how many objects a scene holds and whether look-alikes may share it.

"mixed" (the default) is the project's benchmark world: 1-3 objects, a quarter of the scenes
repeating a shape and colour (so counting captions have something to count and a spatial caption
sometimes needs a size word to single an object out). "pairs" is GenEval's position task: exactly
two objects of different shape or colour, so every scene states one relation between two named
objects and no caption needs a size word. The names are the manifest schema's (WORLD_NAMES).
"""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.manifest.schema import WORLD_NAMES as _MANIFEST_WORLD_NAMES


@dataclass(frozen=True)
class World:
    min_objects: int
    max_objects: int
    repeat_prob: float   # chance a scene's second object copies the first one's shape and colour
    distinct: bool       # redraw objects until no two share shape and colour


WORLDS: dict[str, World] = {
    "mixed": World(1, 3, 0.25, False),
    "pairs": World(2, 2, 0.0, True),
}
DEFAULT_WORLD = "mixed"
WORLD_NAMES = tuple(WORLDS)
# The manifest names the worlds (the schema sits below data/ in the house); both lists must agree.
if WORLD_NAMES != _MANIFEST_WORLD_NAMES:
    raise ImportError(f"data.worlds implements {WORLD_NAMES}, the manifest names {_MANIFEST_WORLD_NAMES}")


def get_world(name: str) -> World:
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown shapes world {name!r}; worlds: {', '.join(WORLDS)}") from None
