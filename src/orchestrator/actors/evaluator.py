"""Evaluator actor: runs a manifest's eval suites on a trial's weights as checkpoints land.

It runs in its own process, so training never waits on it; the coordinator journals what it
returns. The suites are `orchestrator.eval.suites`, the same code `orch eval` runs: this actor
only picks the weights (base, checkpoint or exported model), maps the manifest's `eval` section
to the suites' options, keeps the CLIP and Inception networks loaded between calls and saves a
sample grid of the images the suites judged, `<label>.png` (judged: prompt and verdict under each
image, where the spatial suite ran), and the suites' sheets (`<label>-drawbench-*.png`).
"""
from __future__ import annotations

import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from orchestrator.manifest import Manifest
from orchestrator.manifest.schema import SPATIAL_RULES, is_remote, local_path
from orchestrator.storage import open_store
from orchestrator.telemetry.sink import install_from_env

if TYPE_CHECKING:  # torch and the models load in the evaluator's process, when it first evaluates:
    from orchestrator.eval.suites import EvalOptions  # the coordinator imports this module for the
    from orchestrator.models.loading import LoadedModel  # actor class and stays light

GRID_IMAGES = 32


def weights_for(source: dict, manifest: Manifest, store, base_dir: Path | None) -> "LoadedModel":
    """The model to evaluate (the base, a checkpoint or the exported model), through the one loader."""
    from orchestrator.models.loading import load_model

    where = {"base": None, "checkpoint": source.get("key"), "model": source.get("prefix")}[source["kind"]]
    return load_model(where, spec=manifest.model, store=store, base_dir=base_dir)


def _resolve(value: str | None, base_dir: Path | None) -> str | None:
    """A manifest path as the suites take it: local ones absolute (against the manifest's
    directory), remote URIs as written."""
    if value is None or is_remote(value):
        return value
    return str(local_path(value, base_dir))


def eval_options(manifest: Manifest, base_dir: Path | None) -> EvalOptions:
    """The manifest's `eval` section as the suites' options (EvalOptions.from_spec), around it the
    held-out prompts: the manifest's eval data seed (a shapes dataset no trial trains on) at its
    image size."""
    from orchestrator.eval.suites import DEFAULT_EVAL_SEED, EvalOptions
    from orchestrator.models.registry import declared_conditioning_clip

    e, src = manifest.eval, manifest.data.eval
    return EvalOptions.from_spec(
        e, resolve=lambda location: _resolve(location, base_dir),
        eval_seed=src.seed if src is not None and src.seed is not None else DEFAULT_EVAL_SEED,
        image_size=(src.size if src is not None and src.size else None) or manifest.model.resolution,
        matching=src.model_dump(mode="json") if src is not None and "matching" in e.suites else None,
        matching_base_dir=str(base_dir) if base_dir is not None else None,
        oracle_clip=_resolve(declared_conditioning_clip(manifest.model), base_dir) if e.oracle else None)


def grid_picture(images: Any, prompts: list, suites: list[str], title: str, rule: str = SPATIAL_RULES[0]) -> Any:
    """The sample grid of an evaluation: where the `spatial` suite ran, the judged sheet (each image
    upscaled, its prompt and the judge's verdict under it: orchestrator.eval.sheet); otherwise the
    plain tiles. `images` are the first generated ones, in the held-out prompts' order; `rule` the
    spatial suite's (eval.spatial_rule)."""
    if "spatial" in suites:
        from orchestrator.eval.sheet import judged_sheet

        return judged_sheet(images, prompts[:len(images)], limit=None, cols=8, title=title, rule=rule)
    from orchestrator.models.common.images import image_grid

    return image_grid(images, cols=8)


def describe(source: dict) -> str:
    """What was evaluated, as the journal records it: a checkpoint's blob key, an exported model's
    prefix, or 'base'."""
    return source.get("key") or source.get("prefix") or source["kind"]


class Evaluator:
    def __init__(self, blobs_uri: str, grids_prefix: str, num_threads: int = 1):
        import torch

        torch.set_num_threads(num_threads)
        self.store = open_store(blobs_uri)
        self.grids_prefix = grids_prefix.rstrip("/")
        self._nets: dict[tuple[str, str | None], Any] = {}  # (kind, source) -> loaded CLIP / Inception
        self.telemetry = install_from_env()

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, manifest_json: dict, base_dir: str | None, source: dict, label: str,
                 about: dict[str, str] | None = None) -> dict:
        """Every suite of the manifest on one set of weights: flat metrics (value, n, CI), what each
        suite reports besides, and the blob key of a grid of the judged images (if any were made).
        `about` (experiment, trial, weights: base | checkpoint | final) labels the metrics exported."""
        try:
            out, results = self._evaluate(manifest_json, base_dir, source, label)
        except Exception:
            if about is not None:
                self.telemetry.eval_failed(experiment=about["experiment"])
            raise
        out["gauges"] = {r.suite: {m.name: float(m.value) for m in r.metrics} for r in results}
        if about is not None:  # a base's values are published by the coordinator, per trial it serves
            for r in results:
                self.telemetry.evaluated(**about, suite=r.suite, seconds=r.wall_s,
                                         metrics={} if about["weights"] == "base" else out["gauges"][r.suite])
        return out

    def _evaluate(self, manifest_json: dict, base_dir: str | None, source: dict, label: str):
        from orchestrator.eval.receipt import make_receipt
        from orchestrator.eval.suites import build_context, flatten_metrics, jsonable, run_in_context, store_artifacts

        manifest = Manifest.model_validate(manifest_json, context={"check_files": False})
        root = Path(base_dir) if base_dir else None
        options = eval_options(manifest, root)
        nets = {"clip": ("clip", options.clip), "inception": ("inception", options.fid_weights)}
        ctx = build_context(None, store=self.store, options=options,
                            model=weights_for(source, manifest, self.store, root),
                            clip_encoder=self._nets.get(nets["clip"]),
                            inception_net=self._nets.get(nets["inception"]))
        results = run_in_context(ctx, manifest.eval.suites)
        loaded = ctx.loaded()
        for what, key in nets.items():  # kept for the next checkpoint (seconds each to load on a CPU)
            if loaded[what] is not None:
                self._nets[key] = loaded[what]
        grid_key = None
        if loaded["generated"] is not None:
            buf = io.BytesIO()
            what = label if describe(source) == label else f"{label} ({describe(source)})"
            grid_picture(loaded["generated"][:GRID_IMAGES], ctx.prompts(), [r.suite for r in results],
                         f"{what}: held-out prompts and the spatial judge's verdicts",
                         ctx.options.spatial_rule).save(buf, format="PNG")
            grid_key = f"{self.grids_prefix}/{label}.png"
            self.store.put(grid_key, buf.getvalue())
        store_artifacts(self.store, f"{self.grids_prefix}/{label}", results)  # DrawBench sheets, beside the grid
        return {"metrics": flatten_metrics(results), "grid": grid_key, "weights": describe(source),
                "receipt": jsonable(make_receipt(ctx, results)),
                "suites": [r.suite for r in results], "options": jsonable(asdict(options)),
                "info": {r.suite: jsonable({**r.info, "wall_s": round(r.wall_s, 3)}) for r in results}}, results


EvaluatorActor = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(Evaluator)
