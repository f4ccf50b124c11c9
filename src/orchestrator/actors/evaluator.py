"""Evaluator actor: runs a manifest's eval suites on a trial's weights as checkpoints land.

It runs in its own process, so training never waits on it; the coordinator journals what it
returns. Suites follow a small interface (`Suite`: weights + manifest -> metrics); only the spatial
suite is built in. Moving it onto `orchestrator.eval.suites` (what `orch eval` runs) is still to do.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import ray

from orchestrator.manifest import Manifest
from orchestrator.storage import open_store

if TYPE_CHECKING:  # torch and the models load in the evaluator's process, when it first evaluates:
    import torch   # the coordinator imports this module for the actor class and stays light

    from orchestrator.models.sd import SDComponents

# How images are sampled for evaluation: DDIM, CFG 3, the same noise for every model (paired).
SAMPLE_STEPS = 25
GUIDANCE = 3.0
NOISE_SEED = 1234


@dataclass
class SuiteOutput:
    metrics: dict[str, float]
    images: torch.Tensor | None = None  # a few samples, for the grid
    extra: dict = field(default_factory=dict)


class Suite(Protocol):
    def __call__(self, components: SDComponents, manifest: Manifest) -> SuiteOutput: ...


def spatial_suite(c: SDComponents, manifest: Manifest) -> SuiteOutput:
    """Spatial accuracy by detection: held-out spatial prompts, GenEval's rule on detected boxes."""
    import torch

    from orchestrator.eval.spatial import heldout_spatial_prompts, score_spatial
    from orchestrator.models.sd import generate
    from orchestrator.models.sd.sampling import to_pil

    src = manifest.data.eval
    seed = src.seed if src is not None else 1000
    size = (src.size if src is not None and src.size else None) or manifest.model.resolution
    prompts = heldout_spatial_prompts(seed, manifest.eval.samples, size)
    g = torch.Generator().manual_seed(NOISE_SEED)
    images = generate(c, [p.text for p in prompts], sampler="ddim", steps=SAMPLE_STEPS,
                      guidance_scale=GUIDANCE, generator=g, batch_size=64)
    score = score_spatial(to_pil(images), prompts)
    return SuiteOutput({"spatial_acc": score.accuracy, "object_acc": score.object_accuracy}, images[:32],
                       {"spatial_ci": list(score.accuracy_ci)})


SUITES: dict[str, Callable[[SDComponents, Manifest], SuiteOutput]] = {"spatial": spatial_suite}


def weights_for(source: dict, manifest: Manifest, store, base_dir: Path | None) -> SDComponents:
    """The components to evaluate: the base, an exported model, or the base with a checkpoint's U-Net."""
    from orchestrator.models.sd import load_components
    from orchestrator.training.checkpoint import from_bytes
    from orchestrator.training.trial import load_base

    kind = source["kind"]
    if kind == "model":
        return load_components(source["prefix"], store=store)
    c = load_base(manifest.model, store, base_dir)
    if kind == "checkpoint":
        state = from_bytes(store.get(source["key"]))
        c.unet.load_state_dict(state["unet"])
        if state.get("ema") is not None:  # evaluate what would be exported
            from orchestrator.training.ema import EMA
            ema = EMA(c.unet, manifest.train.ema_decay or 0.9999)
            ema.load_state_dict(state["ema"])
            ema.copy_to(c.unet)
    c.unet.eval()
    return c


class Evaluator:
    def __init__(self, blobs_uri: str, grids_prefix: str, num_threads: int = 1):
        import torch

        torch.set_num_threads(num_threads)
        self.store = open_store(blobs_uri)
        self.grids_prefix = grids_prefix.rstrip("/")

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, manifest_json: dict, base_dir: str | None, source: dict, label: str) -> dict:
        """Metrics of every suite in the manifest and the blob key of a sample grid."""
        manifest = Manifest.model_validate(manifest_json, context={"check_files": False})
        c = weights_for(source, manifest, self.store, Path(base_dir) if base_dir else None)
        metrics: dict[str, float] = {}
        grid_key = None
        for name in manifest.eval.suites:
            suite = SUITES.get(name)
            if suite is None:
                raise NotImplementedError(f"eval suite {name!r} is not available yet")
            out = suite(c, manifest)
            metrics.update({f"{name}.{k}" if name != "spatial" else k: v for k, v in out.metrics.items()})
            if out.images is not None and grid_key is None:
                from orchestrator.models.sd.sampling import image_grid

                buf = io.BytesIO()
                image_grid(out.images, cols=8).save(buf, format="PNG")
                grid_key = f"{self.grids_prefix}/{label}.png"
                self.store.put(grid_key, buf.getvalue())
        return {"metrics": metrics, "grid": grid_key}


def source_id(source: dict) -> str:
    return hashlib.sha256(repr(sorted(source.items())).encode()).hexdigest()[:12]


EvaluatorActor = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(Evaluator)
