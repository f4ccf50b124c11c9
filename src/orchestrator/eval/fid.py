"""FID and FID-CLIP: features -> streaming float64 statistics -> Fréchet distance.

`fid` uses the FID Inception-v3's 2048-d pool features (weights from the standard file only; no
file, no metric). `fid_clip` is the same distance on the L2-normalised projected image embeddings
of a CLIP (any CLIP the config names), which judges images by what CLIP sees rather than by
ImageNet classes. Reference statistics (real images) are computed once and kept as .npz files
(mu, sigma, n), in the blob store under a key that names the extractor's weights and the data.

There is no confidence interval: FID is a biased distance between two fitted Gaussians, not a mean
over samples, and a bootstrap would need every feature held in memory, which streaming avoids. The
sample count is reported instead; compare FIDs only at equal n (its bias grows as n shrinks).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from .frechet import FeatureStats, RunningStats, distance
from .inception import FIDInceptionV3

if TYPE_CHECKING:
    from .context import EvalContext

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [0, 1] -> [B, D]


def inception_features(model: FIDInceptionV3) -> FeatureFn:
    @torch.inference_mode()
    def extract(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(next(model.parameters()).device))
    return extract


def clip_features(encoder: Any) -> FeatureFn:
    return lambda images: encoder.encode_images(images)


def batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def folder_batches(folder: str | Path, batch_size: int) -> Iterable[torch.Tensor]:
    """uint8 batches of the images in a folder (sorted by name), read lazily; consecutive images
    of one size share a batch (the extractors resize, but a batch must stack)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    batch: list[np.ndarray] = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        if batch and (len(batch) == batch_size or arr.shape != batch[0].shape):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            batch = []
        batch.append(arr)
    yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)


def write_reference_stats(folder: str | Path, out: str, *, fid_weights: str, store: Any = None,
                          batch_size: int = 32) -> FeatureStats:
    """FID reference statistics of a folder of real images, saved as .npz to a local path (or to a
    blob key when a store is given): what `fid_reference` then reuses."""
    from .inception import load_fid_inception

    model = load_fid_inception(fid_weights, store=store)
    stats = feature_stats(inception_features(model), folder_batches(folder, batch_size), model.feature_dim)
    if store is not None:
        store.put(out, stats.to_bytes())
    else:
        stats.save(out)
    return stats


def feature_stats(extract: FeatureFn, image_batches: Iterable[torch.Tensor], dim: int) -> FeatureStats:
    """Stream batches through the extractor into float64 statistics; features are not kept."""
    stats = RunningStats(dim)
    for batch in image_batches:
        stats.update(extract(batch).double().cpu().numpy())
    if stats.n < 2:
        raise ValueError(f"FID needs at least 2 images, got {stats.n}")
    return stats.stats()


def cached_stats(store: Any, key: str | None, compute: Callable[[], FeatureStats]) -> tuple[FeatureStats, bool]:
    """Statistics from `key` in the store when there, else computed and stored. (stats, was_cached)"""
    if store is not None and key is not None and store.exists(key):
        return FeatureStats.load(store.get(key)), True
    stats = compute()
    if store is not None and key is not None:
        store.put(key, stats.to_bytes())
    return stats, False


def load_reference(source: str, store: Any = None) -> FeatureStats:
    """Reference statistics from a local .npz path or a blob key."""
    local = Path(source[len("file://"):] if source.startswith("file://") else source)
    if local.is_file():
        return FeatureStats.load(local)
    if store is not None and store.exists(source):
        return FeatureStats.load(store.get(source))
    raise FileNotFoundError(f"no reference statistics at {local}" + (f" or blob key {source!r}" if store else ""))


def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _FrechetSuite:
    """The distance between the generated images' statistics and the real held-out images' (or a
    reference .npz given as fid_reference)."""
    name = ""

    def requirements(self, ctx: "EvalContext") -> list[str]:
        raise NotImplementedError

    def extractor(self, ctx: "EvalContext") -> tuple[FeatureFn, int, str, dict[str, Any]]:
        """(features, their dimension, an id of the weights for the cache key, info to report)."""
        raise NotImplementedError

    def reference(self, ctx: "EvalContext", extract: FeatureFn, dim: int, weights_id: str) -> tuple[FeatureStats, dict]:
        real = ctx.reference_images()
        key = ctx.reference_key(self.name, weights_id, len(real))
        ref, cached = cached_stats(ctx.store, key, lambda: feature_stats(
            extract, batches(real, ctx.options.feature_batch_size), dim))
        return ref, {"reference": key or "computed from the held-out images (no blob store to cache it in)",
                     "reference_cached": cached}

    def run(self, ctx: "EvalContext"):
        from .results import MetricValue, SuiteResult

        started = time.perf_counter()
        extract, dim, weights_id, info = self.extractor(ctx)
        ref, ref_info = self.reference(ctx, extract, dim, weights_id)
        if ref.dim != dim:
            raise ValueError(f"{self.name}: reference statistics are {ref.dim}-d but the features are {dim}-d")
        gen = feature_stats(extract, batches(ctx.generated(), ctx.options.feature_batch_size), dim)
        value = distance(gen, ref)
        info.update(ref_info, reference_n=ref.n, **ctx.generation_info)
        return SuiteResult(self.name, [MetricValue(self.name, value, gen.n)], info, time.perf_counter() - started)


class FIDSuite(_FrechetSuite):
    name = "fid"

    def requirements(self, ctx: "EvalContext") -> list[str]:
        return ctx.generation_problems(self.name) + ctx.inception_problems(self.name)

    def extractor(self, ctx: "EvalContext"):
        model = ctx.inception()
        sha = model.weights_sha256
        return inception_features(model), int(model.feature_dim), sha or "random", {
            "weights_sha256": sha, "weights": "file" if sha else "RANDOM (tests only, not a real FID)"}

    def reference(self, ctx: "EvalContext", extract: FeatureFn, dim: int, weights_id: str):
        if ctx.options.fid_reference:
            return load_reference(ctx.options.fid_reference, ctx.store), {
                "reference": ctx.options.fid_reference, "reference_cached": True}
        return super().reference(ctx, extract, dim, weights_id)


class FIDClipSuite(_FrechetSuite):
    name = "fid_clip"

    def requirements(self, ctx: "EvalContext") -> list[str]:
        return ctx.generation_problems(self.name) + ctx.clip_problems(self.name)

    def extractor(self, ctx: "EvalContext"):
        enc = ctx.clip()
        digest = _module_digest(enc.model)
        return clip_features(enc), enc.embed_dim, f"clip-{digest}", {"clip": enc.name, "clip_sha256": digest}
