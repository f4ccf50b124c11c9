"""The probe: a model variant for tests and harnesses, plugged in with `ORCH_VARIANT_PLUGINS=
orchestrator.testing.probe_variant` (models/registry.py), never in a real manifest.

It goes through the real runtime (trainer actors, checkpoints, the journal, the Evaluator and its
suites) at almost no compute, with a score that depends on the learning rate and the step the way a
real model's does, so early stopping, scheduling and scale can be measured on it:

- the model is one scalar `quality`, 0 at the start, trained by the generic loop toward 1 (loss
  (quality - 1)^2), so after s steps of AdamW at learning rate lr it is about min(1, s * lr);
- `generate` draws each spatial prompt's two shapes where the prompt puts them with probability
  `quality` (noise from the evaluator's generator, so paired and reproducible), else the other way
  round: the spatial suite's accuracy is about `quality`;
- `ORCH_PROBE_STEP_S` (seconds, default 0) makes each training step take at least that long, for
  harnesses that simulate trial time.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.spec import VariantSpec

NAME = "probe"
STEP_S_ENV = "ORCH_PROBE_STEP_S"
_PHRASE = r"a (?:(small|large) )?(red|green|blue|yellow) (circle|square|triangle)"
_PROMPT = re.compile(rf"^{_PHRASE} (to the left of|to the right of|above|below) {_PHRASE}$")


class Probe:
    def __init__(self, quality: float = 0.0, resolution: int = 32):
        import torch

        self.net = torch.nn.Module()
        self.net.quality = torch.nn.Parameter(torch.tensor([float(quality)]))
        self.resolution = resolution

    @property
    def quality(self) -> float:
        return float(self.net.quality.detach().clamp(0.0, 1.0))


class ProbeObjective:
    def __init__(self, m: Probe, data: Any):
        self.modules = {"probe": m.net}
        self.num_examples = len(data)
        self.pause = float(os.environ.get(STEP_S_ENV, "0") or 0)

    def loss(self, batch: Any):
        if self.pause:
            time.sleep(self.pause)
        return ((self.modules["probe"].quality - 1.0) ** 2).sum()


def load_base(spec: Any, store: Any, base_dir: Path | None) -> Probe:
    return Probe(0.0, spec.resolution)


def modules(m: Probe) -> dict[str, Any]:
    return {"probe": m.net}


def objective(m: Probe, data: Any, spec: Any, options: Any, *, store: Any, device: Any,
              use_cache: bool = True) -> ProbeObjective:
    return ProbeObjective(m, data)


def export(m: Probe, out_dir: Path) -> None:
    from orchestrator.models.registry import INDEX_KEY

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_index.json").write_text(json.dumps({INDEX_KEY: NAME, "quality": m.quality,
                                                         "resolution": m.resolution}))


def load(path: Path) -> Probe:
    doc = json.loads((Path(path) / "model_index.json").read_text())
    return Probe(doc["quality"], doc["resolution"])


def resolution(m: Probe) -> int:
    return m.resolution


def generate(m: Probe, prompts: list[str], *, generator: Any = None, resolution: int | None = None,
             **sampling: Any):
    """Each prompt's scene, right with probability `m.quality`, else its two shapes swapped; a prompt
    that is not a two-shape spatial caption draws an empty image."""
    import numpy as np
    import torch

    from orchestrator.data.shapes import SIZE_FRACTION, Scene, render

    side = resolution or m.resolution
    draws = torch.rand(len(prompts), generator=generator, device=getattr(generator, "device", "cpu")).cpu()
    images = []
    for text, u in zip(prompts, draws.tolist()):
        found = _PROMPT.match(text.strip().lower())
        objects: tuple = ()
        if found:
            s_size, s_colour, s_shape, rel, o_size, o_colour, o_shape = found.groups()
            right = u < m.quality
            a = _object(s_shape, s_colour, s_size or "large", side, SIZE_FRACTION)
            b = _object(o_shape, o_colour, o_size or "large", side, SIZE_FRACTION)
            first, second = (a, b) if right else (b, a)  # `first` sits where the relation puts A
            horizontal = rel in ("to the left of", "to the right of")
            lead = rel in ("to the left of", "above")
            near, far = (first, second) if lead else (second, first)
            objects = (_place(near, side, 0, horizontal), _place(far, side, 1, horizontal))
        images.append(np.asarray(render(Scene(side, objects)), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _object(shape: str, colour: str, size: str, side: int, fractions: dict) -> Any:
    from orchestrator.data.shapes import ShapeObject

    n = max(2, round(fractions[size] * side))
    return ShapeObject(shape, colour, size, 0, 0, n, n)


def _place(o: Any, side: int, slot: int, horizontal: bool) -> Any:
    """In the first or second half of the image along the relation's axis, centred across it."""
    from dataclasses import replace

    along = slot * side // 2 + (side // 2 - o.w) // 2
    across = (side - o.h) // 2
    return replace(o, x=along, y=across) if horizontal else replace(o, x=across, y=along)


SPEC = VariantSpec(
    name=NAME,
    kind="generator",
    trains_on=IMAGE_TEXT_KINDS,
    suites=("spatial",),
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    generate=generate,
)
