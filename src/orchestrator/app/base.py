"""The tiny base a manifest with `model.base: null` trains from: pretrained once per blob store
and variant, in the driver, before any trial starts (`orch run`, `orch submit`, the head).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .progress import pretrain_bar

if TYPE_CHECKING:
    from orchestrator.experiment.plan import SweepPlan

log = logging.getLogger(__name__)


def _pretrain_record(spec, seed: int, resolution: int) -> dict[str, Any]:
    return {**spec.model_dump(mode="json"), "seed": seed, "resolution": resolution, "captions": "generic"}


def ensure_base(plan: SweepPlan, num_threads: int = 1, progress: bool = False) -> bool:
    """Pretrain and cache each tiny base the manifest needs in the blob store; True if any was built now.

    One base per variant (its spec's `tiny_base`: SD's and GLIDE-mini's side by side in one sweep). The
    settings are the manifest's `model.pretrain` (PretrainSpec defaults when unset), recorded next
    to the base (`<prefix>.pretrain.json`); a cached base pretrained with other settings is an
    error rather than silently reused, since the trial ids say which base they mean.

    One torch thread by default: with a second thread every op's barrier waits on a descheduled
    thread as soon as another process holds a core, which costs far more than the second thread
    gains (docs/measurements.md has the numbers).
    """
    needing = [t.manifest for t in plan.trials if t.manifest.model.base is None]
    if not needing:
        return False  # before importing the ML core: the driver of a run needs none of it
    from orchestrator.models.registry import get_variant

    by_variant: dict[str, list] = {}
    for m in needing:
        by_variant.setdefault(m.model.variant, []).append(m)
    built = False
    for name, manifests in by_variant.items():
        built = _ensure_variant_base(plan, get_variant(name), manifests, num_threads, progress) or built
    return built


def _ensure_variant_base(plan: SweepPlan, variant, needing: list, num_threads: int, progress: bool) -> bool:
    from orchestrator.storage import open_store
    from orchestrator.training import pretrain_base, set_deterministic

    name, prefix = variant.name, variant.tiny_base
    if prefix is None:
        raise ValueError(f"{plan.origin}: model.base is null, but variant {name!r} has no tiny shapes base; "
                         f"set model.base")
    if len({_canonical(t.model.pretrain_settings) for t in needing}) > 1:
        raise ValueError(f"{plan.origin}: model.pretrain differs between {name} trials; one blob store holds "
                         f"one tiny base per variant, so model.pretrain cannot be swept")
    m = needing[0]
    spec = m.model.pretrain_settings
    src = m.data.train
    want = _pretrain_record(spec, src.seed if src else 0, m.model.resolution)
    store = open_store(plan.blobs_uri)
    record_key = f"{prefix}.pretrain.json"
    if store.exists(f"{prefix}/model_index.json"):
        if store.exists(record_key):
            have = json.loads(store.get(record_key))
            if have != want:
                raise ValueError(
                    f"the blob store {plan.blobs_uri} holds a tiny {name} base pretrained with {have}, but "
                    f"{plan.origin} asks for {want} (model.pretrain); delete {prefix}/ and "
                    f"{record_key} from the store, or point storage.blobs elsewhere")
        else:
            log.info("using the tiny %s base in %s (built by `orch pretrain`; its settings are not recorded)",
                     name, plan.blobs_uri)
        return False
    set_deterministic(num_threads)
    log.info("pretraining the tiny %s base (%s) into %s", name, want, plan.blobs_uri)
    # A variant that pretrains through its own objective has no VAE stage in front.
    stages = ("denoiser" if variant.pretrain_options is not None
              else f"VAE {spec.vae_steps} steps, then denoiser")
    with pretrain_bar(spec.steps, progress, f"{name} base ({stages})") as on_metrics:
        pretrain_base(prefix, None, steps=spec.steps, seed=want["seed"], n=spec.n,
                      size=m.model.resolution, vae_steps=spec.vae_steps, batch_size=spec.batch_size, lr=spec.lr,
                      store=store, on_metrics=on_metrics, variant=name, **spec.recipe())
    store.put(record_key, (json.dumps(want, sort_keys=True, indent=1) + "\n").encode())  # written last: complete
    return True


def _canonical(section) -> str:
    from orchestrator.manifest import canonical_json

    return canonical_json(section.model_dump(mode="json"))
