"""FID and FID-CLIP: features -> streaming float64 statistics -> Fréchet distance.

`fid` uses the FID Inception-v3's 2048-d pool features (weights from the standard file only; no
file, no metric). `fid_clip` is the same distance on the L2-normalised projected image embeddings
of a CLIP (any CLIP the config names, except the one the model is conditioned on), which judges
images by what CLIP sees rather than by ImageNet classes. Reference features (real held-out
images) are computed once and kept as .npz files (mu, sigma, n and the features), in the blob
store under a key that names the extractor's weights and the data; such a file also serves as a
`fid_reference`.

Beside each FID: KID (kid.py) on the same features, unbiased at any n, with its std over subsets;
and FID's spread over `reference_resamples` (default 3) bootstrap resamplings of the reference
features (with replacement, seeded by `seed`, each of the reference's size so the bias stays the
same): their std on the FID value, their min and max as values of their own. Every value carries
the generated n and the reference n. There is no confidence interval: FID is a biased distance
between two fitted Gaussians, not a mean over samples; compare FIDs only at equal n (its bias
grows as n shrinks). Features are held in memory (n × d float64: 16 MB per 1000 Inception
features). A reference .npz holding statistics only (pytorch-fid's) gives the FID alone.

With `oracle_clip` (a conditioned chain, VCDM), the oracle arm's images (context.oracle_generated)
are scored against the same reference with the same noise: the same values, named `oracle`
(the FID) and `oracle_*`.
"""
from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from orchestrator.models.common.serialize import module_hash

from .frechet import FeatureStats, RunningStats, distance, distance_to_sample
from .inception import FIDInceptionV3
from .kid import kid

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
                          batch_size: int = 32, keep_features: bool = True) -> FeatureStats:
    """FID reference statistics of a folder of real images, saved as .npz to a local path (or to a
    blob key when a store is given): what `fid_reference` then reuses. With `keep_features` the
    file holds the features too (16 MB per 1000 images), which KID and FID's spread need;
    without, the features are streamed and dropped (memory O(d²) for any folder), FID alone."""
    from .inception import load_fid_inception

    model = load_fid_inception(fid_weights, store=store)
    images = folder_batches(folder, batch_size)
    if keep_features:
        x = collect_features(inception_features(model), images, model.feature_dim)
        stats, data = stats_of(x), features_to_bytes(x)
    else:
        stats = feature_stats(inception_features(model), images, model.feature_dim)
        data = stats.to_bytes()
    if store is not None:
        store.put(out, data)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)
    return stats


def feature_stats(extract: FeatureFn, image_batches: Iterable[torch.Tensor], dim: int) -> FeatureStats:
    """Stream batches through the extractor into float64 statistics; features are not kept."""
    stats = RunningStats(dim)
    for batch in image_batches:
        stats.update(extract(batch).double().cpu().numpy())
    if stats.n < 2:
        raise ValueError(f"FID needs at least 2 images, got {stats.n}")
    return stats.stats()


def collect_features(extract: FeatureFn, image_batches: Iterable[torch.Tensor], dim: int) -> np.ndarray:
    """float64 features [n, dim] of every image, kept (KID and the reference resampling need them)."""
    parts = [extract(batch).double().cpu().numpy() for batch in image_batches]
    x = np.concatenate(parts) if parts else np.zeros((0, dim))
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected features of shape (n, {dim}), got {x.shape}")
    if len(x) < 2:
        raise ValueError(f"FID needs at least 2 images, got {len(x)}")
    return x


def stats_of(features: np.ndarray) -> FeatureStats:
    return RunningStats(features.shape[1]).update(features).stats()


def features_to_bytes(features: np.ndarray) -> bytes:
    """An .npz with the statistics (so it serves as a reference .npz too) and the features."""
    s = stats_of(features)
    buf = io.BytesIO()
    np.savez(buf, mu=s.mu, sigma=s.sigma, n=np.int64(s.n), features=features)
    return buf.getvalue()


def features_in(data: bytes) -> np.ndarray | None:
    """The features a statistics .npz holds (our cached references), None where it holds none."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return np.asarray(z["features"], np.float64) if "features" in z.files else None


def cached_features(store: Any, key: str | None, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Features from `key` in the store when there (and holding features), else computed and
    stored. (features, was_cached)"""
    if store is not None and key is not None and store.exists(key):
        x = features_in(store.get(key))
        if x is not None:
            return x, True
    x = compute()
    if store is not None and key is not None:
        store.put(key, features_to_bytes(x))
    return x, False


def load_reference(source: str, store: Any = None) -> tuple[FeatureStats, np.ndarray | None]:
    """Reference statistics from a local .npz path or a blob key, and the features where it holds them."""
    local = Path(source[len("file://"):] if source.startswith("file://") else source)
    if local.is_file():
        data = local.read_bytes()
    elif store is not None and store.exists(source):
        data = store.get(source)
    else:
        raise FileNotFoundError(f"no reference statistics at {local}" + (f" or blob key {source!r}" if store else ""))
    return FeatureStats.load(data), features_in(data)


def resampled_distances(gen: FeatureStats, ref_features: np.ndarray, resamples: int, seed: int) -> list[float]:
    """The Fréchet distance to `resamples` bootstrap resamplings of the reference features (drawn
    with replacement, each of the reference's own size, so FID's n-dependent bias stays the same)."""
    rng = np.random.default_rng(seed)
    n = len(ref_features)
    return [distance_to_sample(gen, ref_features[rng.integers(0, n, n)]) for _ in range(resamples)]


NO_FEATURES = "unavailable: the reference .npz holds statistics only, not the features it needs"


class _FrechetSuite:
    """The distance between the generated images' statistics and the real held-out images' (or a
    reference .npz given as fid_reference), its spread over bootstrap resamplings of the reference,
    and KID on the same features."""
    name = ""

    def requirements(self, ctx: "EvalContext") -> list[str]:
        raise NotImplementedError

    def extractor(self, ctx: "EvalContext") -> tuple[FeatureFn, int, str, dict[str, Any]]:
        """(features, their dimension, an id of the weights for the cache key, info to report)."""
        raise NotImplementedError

    def reference(self, ctx: "EvalContext", extract: FeatureFn, dim: int,
                  weights_id: str) -> tuple[FeatureStats, np.ndarray | None, dict]:
        """(statistics, features or None, info) of the reference."""
        real = ctx.reference_images()
        key = ctx.reference_key(self.name, weights_id, len(real))
        x, cached = cached_features(ctx.store, key, lambda: collect_features(
            extract, batches(real, ctx.options.feature_batch_size), dim))
        return stats_of(x), x, {"reference": key or "computed from the held-out images (no blob store to cache it in)",
                                "reference_cached": cached}

    def run(self, ctx: "EvalContext"):
        from .results import SuiteResult

        started = time.perf_counter()
        extract, dim, weights_id, info = self.extractor(ctx)
        ref, ref_x, ref_info = self.reference(ctx, extract, dim, weights_id)
        if ref.dim != dim:
            raise ValueError(f"{self.name}: reference statistics are {ref.dim}-d but the features are {dim}-d")
        metrics, scored, gen_x = self.score(ctx, ctx.generated(), extract, dim, ref, ref_x)
        # The generated features, kept beside the evaluation (a blob, not the journal: n x d floats) for
        # a paired bootstrap against another model judged on the same prompts and noise.
        artifacts = {f"{self.name}-features.npz": features_to_bytes(gen_x)}
        info.update(ref_info, reference_n=ref.n, **ctx.generation_info, **scored,
                    features=f"{self.name}-features.npz")
        oracle = ctx.oracle_generated()
        if oracle is not None:
            oracle_metrics, _, _ = self.score(ctx, oracle, extract, dim, ref, ref_x)
            metrics += [replace(m, name="oracle" if m.name == self.name else f"oracle_{m.name}")
                        for m in oracle_metrics]
        info.update(ctx.oracle_info)
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started, artifacts=artifacts)

    def score(self, ctx: "EvalContext", images: torch.Tensor, extract: FeatureFn, dim: int, ref: FeatureStats,
              ref_x: np.ndarray | None) -> tuple[list, dict[str, Any], np.ndarray]:
        """FID (with its spread over reference resamplings) and KID of one set of images, and its features."""
        from .results import MetricValue

        o = ctx.options
        gen_x = collect_features(extract, batches(images, o.feature_batch_size), dim)
        gen = stats_of(gen_x)
        n, n_ref = gen.n, ref.n
        fid = MetricValue(self.name, distance(gen, ref), n, n_reference=n_ref)
        if ref_x is None:
            return [fid], {"reference_resamples": NO_FEATURES, "kid": NO_FEATURES}, gen_x
        spread = resampled_distances(gen, ref_x, o.reference_resamples, o.seed)
        k = kid(gen_x, ref_x, subsets=o.kid_subsets, seed=o.seed)
        info = {"reference_resamples": {"method": "bootstrap: drawn with replacement, n_reference each",
                                        "seed": o.seed, "values": spread},
                "kid": {"kernel": "(x·y/d + 1)^3", "subsets": k.subsets, "subset_size": k.subset_size,
                        "seed": o.seed}}
        metrics = [replace(fid, std=float(np.std(spread, ddof=1)) if len(spread) > 1 else None)]
        if spread:
            metrics += [MetricValue("reference_resample_min", min(spread), n, n_reference=n_ref),
                        MetricValue("reference_resample_max", max(spread), n, n_reference=n_ref)]
        metrics.append(MetricValue("kid", k.mean, n, std=k.std, n_reference=n_ref))
        return metrics, info, gen_x


class FIDSuite(_FrechetSuite):
    name = "fid"

    def requirements(self, ctx: "EvalContext") -> list[str]:
        return ctx.generation_problems(self.name) + ctx.inception_problems(self.name) + ctx.oracle_problems(self.name)

    def extractor(self, ctx: "EvalContext"):
        model = ctx.inception()
        sha = model.weights_sha256
        return inception_features(model), int(model.feature_dim), sha or "random", {
            "weights_sha256": sha, "weights": "file" if sha else "RANDOM (tests only, not a real FID)"}

    def reference(self, ctx: "EvalContext", extract: FeatureFn, dim: int, weights_id: str):
        if ctx.options.fid_reference:
            ref, x = load_reference(ctx.options.fid_reference, ctx.store)
            return ref, x, {"reference": ctx.options.fid_reference, "reference_cached": True}
        return super().reference(ctx, extract, dim, weights_id)


class FIDClipSuite(_FrechetSuite):
    """FID on a CLIP's image features. That CLIP must not be the one the model is conditioned on
    (a VCDM trains to reproduce its embeddings, so it would judge the model by its own target)."""
    name = "fid_clip"

    def requirements(self, ctx: "EvalContext") -> list[str]:
        problems = ctx.generation_problems(self.name) + ctx.clip_problems(self.name) + ctx.oracle_problems(self.name)
        return problems or self.same_clip_problems(ctx)

    def same_clip_problems(self, ctx: "EvalContext") -> list[str]:
        try:
            conditioned_on = ctx.model().conditioning_clip_sha256
        except (FileNotFoundError, ValueError, NotImplementedError) as exc:
            return [f"{self.name}: cannot load the model to check the CLIP it is conditioned on: {exc}"]
        if conditioned_on is None or module_hash(ctx.clip().model) != conditioned_on:
            return []
        return [f"{self.name}: the CLIP given ({ctx.clip().name}) is the CLIP the model is conditioned on (weights "
                f"sha256 {conditioned_on[:12]}): it would judge the images by the very embeddings the model was "
                f"trained to reproduce. Pass a second CLIP, trained on other data or with another seed"]

    def extractor(self, ctx: "EvalContext"):
        enc = ctx.clip()
        digest = module_hash(enc.model)
        return clip_features(enc), enc.embed_dim, f"clip-{digest}", {"clip": enc.name, "clip_sha256": digest}
