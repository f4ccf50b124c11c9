"""What suites share while they run: the options, the model under test, held-out prompts, the
images generated once for them, and the scorers (CLIP, Inception) — each loaded when first asked.

Suites ask the context for what they need (`generated()` from a generator variant, `clip()` /
`scorer()` to score captions against images) and say beforehand what would stop them
(`*_problems`), so every requirement is checked before any work starts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.data.worlds import DEFAULT_WORLD
from orchestrator.models.loading import LoadedModel, load_model
from orchestrator.storage.location import resolve_location, strip_file_scheme

from .options import EvalOptions
from .results import MetricUnavailable
from .spatial import SpatialPrompt


@dataclass(frozen=True)
class MatcherScorer:
    """A matcher variant as a scorer of (caption, image) pairs."""
    loaded: LoadedModel

    @property
    def name(self) -> str:
        return f"{self.loaded.variant.name}:{self.loaded.source}"

    def score_pairs(self, captions: list[str], images: list[Any]) -> np.ndarray:
        return np.asarray(self.loaded.variant.score(self.loaded.model, captions, images), dtype=np.float64)


@dataclass(frozen=True)
class NamedScorer:
    name: str
    scorer: Any

    def score_pairs(self, captions: list[str], images: list[Any]) -> np.ndarray:
        return np.asarray(self.scorer.score_pairs(captions, images), dtype=np.float64)


@dataclass(frozen=True)
class HeldOut:
    prompt: SpatialPrompt
    example: Any  # data.shapes.ShapesExample


def generate_images(m: LoadedModel, texts: list[str], o: EvalOptions, device: torch.device, resolution: int,
                    repeats: int = 1, generator: torch.Generator | None = None, **conditioning: Any) -> torch.Tensor:
    """[repeats * len(texts), 3, H, W] in [0, 1]: `texts` `repeats` times over, as the suites
    sample. The noise comes from one generator seeded with `o.seed` (or `generator`, already drawn
    from), so every model given the same texts and options starts from the same noise (paired
    comparisons, human grading). `conditioning`: a chain's first-stage keywords (oracle arm,
    consistency)."""
    gen = generator if generator is not None else torch.Generator(device).manual_seed(o.seed)
    return m.variant.generate(m.model, texts * repeats, sampler=o.sampler, steps=o.steps,
                              guidance_scale=o.guidance_scale, generator=gen, resolution=resolution,
                              batch_size=o.batch_size, **conditioning)


class EvalContext:
    """What suites share: the model, held-out prompts, generated images, CLIP, Inception (all lazy)."""

    def __init__(self, checkpoint: str | None, options: EvalOptions, *, store: Any = None, base: str | None = None,
                 model: Any = None, clip: Any = None, inception: Any = None):
        self.checkpoint, self.options, self.store, self.base = checkpoint, options, store, base
        if model is not None and not isinstance(model, LoadedModel):
            raise TypeError(f"model must be a LoadedModel (orchestrator.models.loading), not {type(model).__name__}")
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model, self._clip, self._inception = model, clip, inception
        self._heldout: list[HeldOut] = []
        self._next_scene = 0
        self._generated: torch.Tensor | None = None
        self._oracle: torch.Tensor | None = None
        self._oracle_clip: Any = None
        self._pick: Any = None
        self.oracle_info: dict[str, Any] = {}
        self.generation_info: dict[str, Any] = {}

    # ---- prerequisites --------------------------------------------------------------
    def model_problems(self, suite: str) -> list[str]:
        if self._model is None and self.checkpoint is None:
            return [f"{suite}: needs a checkpoint to generate images from"]
        return []

    def clip_problems(self, suite: str) -> list[str]:
        if self._clip is not None:
            return []
        if not self.options.clip:
            return [f"{suite}: needs a CLIP (set clip to a CLIP directory or blob prefix in transformers' "
                    f"format, e.g. one trained by train_tiny_clip)"]
        return self._missing(self.options.clip, "config.json", f"{suite}: CLIP")

    def scorer_problems(self, suite: str) -> list[str]:
        """A suite that scores captions against images uses the model under test when it is a
        matcher, and the CLIP otherwise."""
        if self._model is None and self.checkpoint is None:
            return self.clip_problems(suite)
        try:
            is_matcher = self.model().kind == "matcher"
        except (FileNotFoundError, ValueError, NotImplementedError) as exc:
            return [f"{suite}: cannot load the model to score with: {exc}"]
        return [] if is_matcher else self.clip_problems(suite)

    def scorer(self) -> Any:
        """What scores (caption, image) pairs: `score_pairs(captions, images)` and a `name`."""
        if self._model is not None or self.checkpoint is not None:
            m = self.model()
            if m.kind == "matcher":
                return MatcherScorer(m)
        clip = self.clip()
        return NamedScorer(f"clip:{clip.name}", clip)

    def inception_problems(self, suite: str) -> list[str]:
        if self._inception is not None:
            return []
        if not self.options.fid_weights:
            return [f"{suite}: needs the FID Inception weights (fid_weights: a local path or blob key of "
                    f"pt_inception-2015-12-05-6726825d.pth); FID is never computed with other weights"]
        return self._missing(self.options.fid_weights, None, f"{suite}: FID Inception weights")

    def location_problems(self, source: str, marker: str | None, what: str) -> list[str]:
        """A suite's own input checked as the context checks its own: a directory holding `marker`, or a file
        (marker None); [] when there, else one line naming `what` and where it was looked for."""
        return self._missing(source, marker, what)

    def _missing(self, source: str, marker: str | None, what: str) -> list[str]:
        """A cheap existence check of a local path or blob (az:// URIs are checked when loaded)."""
        if source.startswith("az://"):
            return []
        try:
            loc = resolve_location(source, store=self.store)
            if loc.has(marker) if marker else (loc.path.is_file() if loc.is_local else loc.store.exists(loc.prefix)):
                return []
            where = loc.describe()
        except FileNotFoundError:
            where = str(Path(strip_file_scheme(source)).expanduser())
        return [f"{what} not found at {where}" + (" (no blob store given)" if self.store is None else "")]

    def generation_problems(self, suite: str) -> list[str]:
        problems = self.model_problems(suite)
        if self._model is not None and not self._model.generates:
            problems.append(f"{suite}: needs generated images; variant {self._model.variant.name!r} is a "
                            f"{self._model.kind}: it generates none")
        if self.options.best_of > 1:
            problems += self.clip_problems(f"{suite} (best_of={self.options.best_of})")
        return problems

    # ---- lazy resources -------------------------------------------------------------
    def model(self) -> LoadedModel:
        if self._model is None:
            if self.checkpoint is None:
                raise MetricUnavailable("no checkpoint to evaluate")
            self._model = load_model(self.checkpoint, store=self.store, base=self.base, device=self.device)
        return self._model

    def model_if_loaded(self) -> LoadedModel | None:
        """The model under test where this context loaded one (or was given one); never loads."""
        return self._model

    def pick_scorer(self) -> Any:
        """The PickScore model (a CLIP with its own logit scale), loaded once from options.pick_score."""
        if self._pick is None:
            if not self.options.pick_score:
                raise MetricUnavailable("pick_score: no PickScore model configured (pick_score)")
            from orchestrator.models.clip import load_clip

            self._pick = load_clip(self.options.pick_score, store=self.store, device=self.device)
        return self._pick

    def pick_problems(self, suite: str) -> list[str]:
        if not self.options.pick_score:
            return [f"{suite}: needs a PickScore model (set pick_score to a transformers CLIPModel directory with "
                    f"its processor files, e.g. PickScore_v1 and the CLIP-H tokenizer and preprocessor config)"]
        return self._missing(self.options.pick_score, "config.json", f"{suite}: PickScore model")

    def clip(self) -> Any:
        if self._clip is None:
            if not self.options.clip:
                raise MetricUnavailable(self.clip_problems("this suite")[0])
            from orchestrator.models.clip import load_clip

            self._clip = load_clip(self.options.clip, store=self.store, device=self.device)
        return self._clip

    def inception(self) -> Any:
        if self._inception is None:
            if not self.options.fid_weights:
                raise MetricUnavailable("fid: no FID Inception weights configured (fid_weights)")
            from .inception import load_fid_inception

            self._inception = load_fid_inception(self.options.fid_weights, store=self.store, device=self.device)
        return self._inception

    def loaded(self) -> dict[str, Any]:
        """What this context has loaded or made so far, for a caller to reuse in its next context
        (the Evaluator actor keeps CLIP and Inception between checkpoints): None where not."""
        return {"clip": self._clip, "inception": self._inception, "generated": self._generated}

    @property
    def image_size(self) -> int:
        if self.options.image_size:
            return self.options.image_size
        if self._model is None and self.checkpoint is None:
            return 32
        return self.model().resolution

    # ---- data -----------------------------------------------------------------------
    def heldout(self, n: int) -> list[HeldOut]:
        """The first `n` scenes of the held-out shapes dataset that state a relation (as
        spatial.heldout_spatial_prompts selects them), with their examples."""
        from orchestrator.data.shapes import make_example

        while len(self._heldout) < n:
            ex = make_example(self.options.eval_seed, self._next_scene, self.image_size, self.options.world)
            if ex.spatial_fact is not None:
                self._heldout.append(HeldOut(SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial), ex))
            self._next_scene += 1
        return self._heldout[:n]

    def prompts(self) -> list[SpatialPrompt]:
        return [h.prompt for h in self.heldout(self.options.samples)]

    def reference_n(self) -> int:
        return self.options.fid_reference_n or self.options.samples

    def real_images(self, start: int, n: int) -> torch.Tensor:
        """uint8 [n, 3, H, W]: held-out scenes start .. start+n-1 of the `reference_scenes`
        selection (prompted: the scenes stating a relation, in order; all: every scene)."""
        if self.options.reference_scenes == "all":
            from orchestrator.data.shapes import make_example

            examples = [make_example(self.options.eval_seed, i, self.image_size, self.options.world)
                        for i in range(start, start + n)]
        else:
            examples = [h.example for h in self.heldout(start + n)[start:]]
        arr = np.stack([np.asarray(ex.image()) for ex in examples])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def reference_images(self) -> torch.Tensor:
        """uint8 [N, 3, H, W]: FID's real images, the first N held-out scenes (with prompted
        scenes: the prompts' own, then the next ones)."""
        return self.real_images(0, self.reference_n())

    def reference_key(self, suite: str, weights_id: str, n: int) -> str | None:
        if self.store is None:
            return None
        scenes = "" if self.options.reference_scenes == "prompted" else f"-{self.options.reference_scenes}"
        scenes += "" if self.options.world == DEFAULT_WORLD else f"-{self.options.world}"
        return (f"cache/eval/{suite}/{weights_id[:24]}/shapes-seed{self.options.eval_seed}"
                f"-{self.image_size}px-n{n}{scenes}.npz")

    # ---- the oracle arm (a conditioned chain given true embeddings) ---------------------
    def oracle_problems(self, suite: str) -> list[str]:
        """What stops the oracle arm when it is asked for (nothing when it is not). A model that
        is conditioned on no CLIP (the unconditional arm of the same sweep) has no oracle arm: its
        suites say so in their info instead of failing."""
        o = self.options
        if not o.oracle_clip:
            return []
        problems = self._missing(o.oracle_clip, "config.json", f"{suite}: oracle CLIP")
        if problems or (self._model is None and self.checkpoint is None):
            return problems
        return self.hook_problems(suite, "oracle_conditioning", "has no oracle arm (it is conditioned on no embedding)")

    def hook_problems(self, suite: str, hook: str, lacking: str) -> list[str]:
        """The model under test loads and its variant has the optional `hook`; else what to say
        (`lacking`: what a variant without it is)."""
        try:
            m = self.model()
        except (FileNotFoundError, ValueError, NotImplementedError) as exc:
            return [f"{suite}: cannot load the model to check it: {exc}"]
        if getattr(m.variant, hook) is None:
            return [f"{suite}: variant {m.variant.name!r} {lacking}"]
        return []

    def oracle_clip(self) -> Any:
        if self._oracle_clip is None:
            from orchestrator.models.clip import load_clip

            self._oracle_clip = load_clip(self.options.oracle_clip, store=self.store, device=self.device)
        return self._oracle_clip

    def oracle_generated(self) -> torch.Tensor | None:
        """[samples, 3, H, W] in [0, 1]: the oracle arm's images, generated from the conditioning
        CLIP's embeddings of held-out real scenes (those after the reference's), with the same
        noise as `generated()`; None, with the reason in `oracle_info`, where there is no such arm."""
        o = self.options
        if not o.oracle_clip:
            return None
        if self._oracle is None and not self.oracle_info:
            m = self.model()
            conditioned_on = m.conditioning_clip_sha256
            if conditioned_on is None:
                self.oracle_info = {"oracle": "not applicable: the model is conditioned on no CLIP embedding "
                                              "(e.g. the unconditional arm)"}
                return None
            from orchestrator.models.common.serialize import module_hash

            clip = self.oracle_clip()
            if module_hash(clip.model) != conditioned_on:
                raise ValueError(f"oracle_clip {o.oracle_clip} (weights sha256 {module_hash(clip.model)[:12]}) is not "
                                 f"the CLIP the model is conditioned on ({conditioned_on[:12]}): the oracle arm needs "
                                 f"that CLIP's embeddings")
            start = self.reference_n()
            real = self.real_images(start, o.samples)
            started = time.perf_counter()
            cond = m.variant.oracle_conditioning(m.model, clip, real)
            self._oracle = generate_images(m, [""] * o.samples, o, self.device, self.image_size, **cond)
            self.oracle_info = {"oracle": {"clip": o.oracle_clip, "clip_sha256": conditioned_on,
                                           "real_scenes": [start, start + o.samples],
                                           "reference_scenes": o.reference_scenes,
                                           "wall_s": time.perf_counter() - started}}
        return self._oracle

    def generated(self) -> torch.Tensor:
        """[samples, 3, H, W] in [0, 1], for `prompts()`, generated once (best of K by CLIP if asked)."""
        if self._generated is None:
            o = self.options
            m = self.model()
            if not m.generates:
                raise MetricUnavailable(f"variant {m.variant.name!r} is a {m.kind}: it generates no images")
            texts = [p.text for p in self.prompts()]
            started = time.perf_counter()
            images = generate_images(m, texts, o, self.device, self.image_size, repeats=o.best_of)
            self.generation_info = {"samples": len(texts), "sampler": o.sampler, "steps": o.steps,
                                    "guidance_scale": o.guidance_scale, "seed": o.seed, "best_of": o.best_of}
            if o.best_of > 1:
                from .clip_r_precision import best_of_k

                images, pick = best_of_k(self.clip(), texts, images.reshape(o.best_of, len(texts), *images.shape[1:]))
                self.generation_info["best_of_picks"] = np.bincount(pick, minlength=o.best_of).tolist()
            self.generation_info["wall_s"] = time.perf_counter() - started
            self._generated = images
        return self._generated


