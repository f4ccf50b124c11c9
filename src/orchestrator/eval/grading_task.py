"""A human-evaluation task: prompts × K images, one image per model each, generated with the same
noise for every model, stored in the blob store; and the blind order a grader sees them in.

The task's id is a hash of what it is (models and where they come from, prompts, generation
settings), so building the same task again is a no-op. Its document (below) is small — prompts and
blob keys, no pixels — and is journaled (journal/grading.py) beside the grades, so the results,
an experiment's report and the grading page need only the journal, and the images only the store:

    {"task_id", "experiments": [...], "models": [labels], "sources": {label: {...}},
     "prompts": {"source", "categories"}, "generation": {...}, "blobs": store URI,
     "items": [{"index", "prompt", "category", "sample", "images": {label: blob key}}]}
"""
from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from orchestrator.manifest.sweep import content_id
from orchestrator.models.common.images import to_pil
from orchestrator.models.loading import LoadedModel

from .context import EvalContext, EvalOptions, generate_images

TASK_PREFIX = "grading"
TASK_VERSION = 1


@dataclass(frozen=True)
class GradingPrompt:
    text: str
    category: str


@dataclass(frozen=True)
class ModelChoice:
    """One model of a task: its label (what results show; never shown to graders), where it comes
    from (journaled), and how to load it (not journaled)."""
    label: str
    source: dict[str, Any]
    load: Callable[[torch.device], LoadedModel] = field(compare=False, repr=False)  # onto that device


@dataclass(frozen=True)
class Generation:
    samples: int = 1            # K images per prompt per model
    seed: int = 1234            # the noise every model starts from
    sampler: str = "ddim"
    steps: int = 25
    guidance_scale: float = 3.0
    resolution: int | None = None  # default: each model's own (models of one size share the noise)
    batch_size: int = 16


def shapes_prompts(n: int, eval_seed: int | None = None) -> list[GradingPrompt]:
    """The shapes world's held-out spatial prompts, as the spatial suite selects them."""
    opts = EvalOptions(samples=n) if eval_seed is None else EvalOptions(samples=n, eval_seed=eval_seed)
    return [GradingPrompt(p.text, "spatial") for p in EvalContext(None, opts).prompts()]


def task_content(models: Sequence[ModelChoice], prompts: Sequence[GradingPrompt], prompt_source: dict[str, Any],
                 generation: Generation) -> dict[str, Any]:
    """What the task is — its id is the hash of this. Its experiments are those its models come
    from (`source["experiment"]`)."""
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise ValueError(f"a grading task compares at least two distinct models, got {labels}")
    if not prompts:
        raise ValueError("a grading task needs at least one prompt")
    experiments = sorted({m.source["experiment"] for m in models if m.source.get("experiment")})
    return {"version": TASK_VERSION, "experiments": experiments, "models": labels,
            "sources": {m.label: m.source for m in models}, "prompts": prompt_source,
            "prompt_list": [asdict(p) for p in prompts], "generation": asdict(generation)}


def task_id_of(content: dict[str, Any]) -> str:
    return content_id("g", content)


def image_key(task_id: str, model_index: int, prompt_index: int, sample: int) -> str:
    # by the model's position, not its label: labels are free text, keys must follow the key rules
    return f"{TASK_PREFIX}/{task_id}/m{model_index}/p{prompt_index:04d}-k{sample}.png"


def build_task(content: dict[str, Any], models: Sequence[ModelChoice], store: Any, blobs_uri: str,
               device: str | torch.device | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate every model's images (same prompts, same noise), store them, return the document.
    Images already in the store (an interrupted build) are not generated again."""
    task_id = task_id_of(content)
    prompts = [GradingPrompt(**p) for p in content["prompt_list"]]
    gen = Generation(**content["generation"])
    texts = [p.text for p in prompts]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))  # as the suites
    for mi, choice in enumerate(models):
        keys = [image_key(task_id, mi, p, k) for k in range(gen.samples) for p in range(len(prompts))]
        if all(store.exists(k) for k in keys):
            continue
        loaded = choice.load(device)
        resolution = gen.resolution or loaded.resolution  # same size across models: same noise
        opts = EvalOptions(samples=len(texts), seed=gen.seed, sampler=gen.sampler, steps=gen.steps,
                           guidance_scale=gen.guidance_scale, batch_size=gen.batch_size, device=str(device))
        if progress:
            progress(f"generating {len(keys)} images of {choice.label} at {resolution} px")
        images = generate_images(loaded, texts, opts, device, resolution, repeats=gen.samples).cpu()
        for key, picture in zip(keys, to_pil(images)):  # generate_images: texts repeated K times over
            buf = io.BytesIO()
            picture.save(buf, format="PNG")
            store.put(key, buf.getvalue())
    pairs = [(p, k) for p in range(len(prompts)) for k in range(gen.samples)]  # prompt-major
    items = [{"index": i, "prompt": prompts[p].text, "category": prompts[p].category, "sample": k,
              "images": {m.label: image_key(task_id, mi, p, k) for mi, m in enumerate(models)}}
             for i, (p, k) in enumerate(pairs)]
    return {**{k: v for k, v in content.items() if k != "prompt_list"}, "task_id": task_id, "blobs": blobs_uri,
            "items": items}


def blind_order(task_id: str, grader: str, item: int, n: int) -> list[int]:
    """The models' order (indices into the task's models) grader `grader` sees on item `item`:
    random, but the same on every reload, and independent between graders and items."""
    seed = hashlib.sha256(f"{task_id}/{grader}/{item}".encode()).digest()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order
