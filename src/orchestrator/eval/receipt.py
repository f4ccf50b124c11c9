"""An evaluation's receipt: what it ran with beyond its options, so that anyone can rerun it exactly
(`orch eval rerun`) and say why two evaluations differ (`orch eval diff`).

The `evaluated` event already holds the suites, every option (seeds, sampler, steps, guidance,
sample counts, the locations of the CLIP, Inception, reference and benchmark files) and the weights'
location. The receipt adds what a location does not pin down: the digest of the weights as loaded,
of each metric model, of each input file or directory, the number of images each suite judged, and
the code and runtime (package version and git commit, torch, device, threads). Which of those can
move which metric is `MOVES`, read by `diff`.
"""
from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import weakref
from pathlib import Path
from typing import Any, Sequence

from .results import SuiteResult

# Options naming a location whose content the receipt digests.
INPUT_OPTIONS = ("clip", "fid_weights", "fid_reference", "winoground", "drawbench", "oracle_clip", "pick_score",
                 "geneval", "geneval_detector", "geneval_clip")
GENERATING = ("spatial", "clip_r_precision", "clip_score", "pick_score", "fid", "fid_clip", "drawbench",
              "consistency", "geneval")
# geneval: its colours are judged by eval.clip where eval.geneval.clip is unset
CLIP_JUDGED = ("clip_r_precision", "clip_score", "fid_clip", "drawbench", "winoground", "matching", "geneval")
EVERY = "every suite"

# receipt or option field -> the suites whose values it can move (what `orch eval diff` prints)
MOVES: dict[str, tuple[str, ...] | str] = {
    "weights.sha256": EVERY, "weights.source": EVERY, "code.commit": EVERY, "code.dirty": EVERY,
    "code.package": EVERY, "runtime.torch": EVERY, "runtime.device": EVERY, "runtime.threads": EVERY,
    "runtime.deterministic": EVERY,
    "metric_models.clip": CLIP_JUDGED, "inputs.clip": CLIP_JUDGED,
    "metric_models.inception": ("fid",), "inputs.fid_weights": ("fid",),
    "inputs.fid_reference": ("fid", "fid_clip"), "inputs.winoground": ("winoground",),
    "inputs.drawbench": ("drawbench",), "inputs.pick_score": ("pick_score",), "inputs.oracle_clip": ("fid", "fid_clip"),
    "options.samples": GENERATING, "options.seed": GENERATING, "options.sampler": GENERATING,
    "options.steps": GENERATING, "options.guidance_scale": GENERATING, "options.best_of": GENERATING,
    "options.eval_seed": GENERATING + ("winoground",), "options.world": GENERATING + ("winoground",),
    "options.image_size": GENERATING, "options.batch_size": GENERATING,
    "options.spatial_rule": ("spatial",), "options.kid_subsets": ("fid", "fid_clip"),
    "options.reference_resamples": ("fid", "fid_clip"), "options.reference_scenes": ("fid", "fid_clip"),
    "options.fid_reference_n": ("fid", "fid_clip"), "options.feature_batch_size": ("fid", "fid_clip"),
    "options.r_precision_pool": ("clip_r_precision",),
    "options.r_precision_negatives": ("clip_r_precision", "drawbench"),
    "options.r_precision_chunks": ("clip_r_precision", "drawbench"), "options.winoground_scenes": ("winoground",),
    "options.drawbench_categories": ("drawbench",), "options.drawbench_per_prompt": ("drawbench",),
    "options.consistency_embeddings": ("consistency",), "options.consistency_images": ("consistency",),
    "inputs.geneval": ("geneval",), "inputs.geneval_detector": ("geneval",), "inputs.geneval_clip": ("geneval",),
    "options.geneval": ("geneval",), "options.geneval_detector": ("geneval",), "options.geneval_clip": ("geneval",),
    "options.geneval_per_prompt": ("geneval",), "options.geneval_tags": ("geneval",),
    "options.geneval_max_prompts": ("geneval",),
    "suites": "which suites ran",
}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# (path, each file's size and mtime) -> digest: the Evaluator digests the same CLIP and reference
# files at every checkpoint it judges; unchanged files are not read again.
_LOCAL_DIGESTS: dict[tuple, str] = {}


def location_digest(value: str, store: Any = None) -> str | None:
    """sha256 of a local file, or over a local directory's files (relative path and digest, in
    order); a blob key the store holds: the sha256 it recorded. None where neither is at hand."""
    local = Path(value[len("file://"):] if value.startswith("file://") else value)
    if local.is_file() or local.is_dir():
        files = [local] if local.is_file() else sorted(q for q in local.rglob("*") if q.is_file())
        key = (str(local.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
        if key not in _LOCAL_DIGESTS:
            if local.is_file():
                _LOCAL_DIGESTS[key] = file_digest(local)
            else:
                h = hashlib.sha256()
                for p in files:
                    h.update(f"{p.relative_to(local).as_posix()}:{file_digest(p)};".encode())
                _LOCAL_DIGESTS[key] = h.hexdigest()
        return _LOCAL_DIGESTS[key]
    if store is not None:
        from orchestrator.storage.base import StorageError

        try:
            return store.info(value).sha256
        except (StorageError, ValueError):  # not one object (a prefix: a directory), or not there
            return None
    return None


_FROZEN_HASHES: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def _frozen_hash(module: Any) -> str:
    """module_hash of a frozen metric model, once per loaded object (the Evaluator keeps its CLIP
    across checkpoints; its weights never change)."""
    from orchestrator.models.common.serialize import module_hash

    if module not in _FROZEN_HASHES:
        _FROZEN_HASHES[module] = module_hash(module)
    return _FROZEN_HASHES[module]


def model_digest(loaded: Any) -> str:
    """sha256 over each module's weights (module_hash), in name order: the weights as loaded,
    whatever file layout or store encoding they came from."""
    from orchestrator.models.common.serialize import module_hash

    h = hashlib.sha256()
    for name, module in sorted(loaded.variant.modules(loaded.model).items()):
        h.update(f"{name}:{module_hash(module)};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit and whether the tree differs from it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("orchestrator")
    except PackageNotFoundError:
        package = None
    here = Path(__file__).resolve().parent
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip() or None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=here.parent,
                               capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package, "commit": commit, "dirty": dirty}


def make_receipt(ctx: Any, results: Sequence[SuiteResult]) -> dict[str, Any]:
    """The receipt of `results`, computed in the context that produced them."""
    import torch


    loaded = ctx.loaded()
    model = ctx.model_if_loaded()
    weights = None if model is None else {"source": model.source, "variant": model.variant.name,
                                          "sha256": model_digest(model)}
    clip, inception = loaded["clip"], loaded["inception"]
    inputs = {name: location_digest(getattr(ctx.options, name), ctx.store)
              for name in INPUT_OPTIONS if getattr(ctx.options, name)}
    return {
        "code": code_version(),
        "runtime": {"python": platform.python_version(), "torch": torch.__version__, "device": str(ctx.device),
                    "threads": torch.get_num_threads(),
                    "deterministic": torch.are_deterministic_algorithms_enabled()},
        "weights": weights,
        "metric_models": {"clip": None if clip is None else _frozen_hash(clip.model),
                          "inception": None if inception is None else getattr(inception, "weights_sha256", None)},
        "inputs": inputs,
        "images": {r.suite: max((m.n for m in r.metrics), default=0) for r in results},
    }


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluated event's payload as dotted fields: receipt sections, options and suites."""
    out: dict[str, Any] = {"suites": list(record.get("suites") or [])}
    for k, v in (record.get("options") or {}).items():
        out[f"options.{k}"] = v
    receipt = record.get("receipt") or {}
    for section, values in receipt.items():
        if isinstance(values, dict):
            for k, v in values.items():
                out[f"{section}.{k}"] = v
        else:
            out[section] = values
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(field, value in a, value in b, what it can move) for every field that differs between two
    evaluated events' payloads."""
    fa, fb = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) != fb.get(key):
            moves = MOVES.get(key)
            if moves is None and key.startswith("images."):
                moves = (key[len("images."):],)
            if moves is None:
                moves = EVERY if key.startswith(("weights.", "code.", "runtime.")) else "unknown: treat as any"
            rows.append((key, fa.get(key), fb.get(key), moves if isinstance(moves, str) else ", ".join(moves)))
    return rows
