"""Discffusion in the shapes world, measured: pooling, zero-shot vs few-shot vs the tiny CLIP, and
the paper's per-sample score vs the public code's batch mean, on two benchmarks.

Benchmarks (both generated from the scenes 0..--scenes-1 of seed --seed, held out from every
training set of this repo, which use seeds 0..): the shapes Winoground pairs (`shapes-winoground`:
text choices, an image and its two captions: the matching suite's per-question accuracy, which is
Winoground's text score per question) and the ComVG-style pairs (`shapes-comvg`: image choices, a
sentence and two images whose negative changes the subject, the object or the relation; accuracy
per neg_value). Each is split few-shot (seeded by --seed): the adapters train on its 5% `train`
part through the seam's loop (`train_trial` on a written manifest), and every configuration is
scored on its `heldout` part through the matching suite's own judge (a tie fails).

Every value with n and its 95% Wilson interval; McNemar's exact test of each configuration's
per-choice outcomes against the paper's zero-shot LogSumExp (same choices, same noise: paired).

    .venv/bin/python scripts/discffusion_shapes.py [--base assets/demo-base] [--scenes 300]
        [--train-steps 80] [--clip-steps 1000]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from orchestrator.data.choices import labelled_choices
from orchestrator.eval.context import NamedScorer
from orchestrator.eval.matching import judge
from orchestrator.eval.stats import mcnemar, wilson_interval
from orchestrator.manifest.schema import DataSource
from orchestrator.models.discffusion.options import DiscffusionOptions
from orchestrator.models.discffusion.score import DiffusionScorer
from orchestrator.models.sd import load_components

ZERO_SHOT = {  # name: (method, options)
    "lse (paper)": ("discffusion", {}),
    "max_row": ("discffusion", {"pooling": "max_row"}),
    "cosine": ("discffusion", {"pooling": "cosine"}),
    "lse, batch mean (code)": ("discffusion", {"reduce": "batch"}),
    "diffusion classifier": ("diffusion_classifier", {}),
}
FEW_SHOT = {  # name: model.discffusion of the trial
    "lse, few-shot p_k/p_v": {},
    "lse, few-shot LoRA r4": {"adapter": "lora"},
}
REFERENCE = "lse (paper)"

MANIFEST = """\
name: disc-{kind}
model: {{variant: discffusion, base: {base}, resolution: 32, discffusion: {options}}}
data: {{train: {{kind: {kind}, n: {n}, seed: {seed}, fewshot: train, fewshot_fraction: 0.05}}}}
train: {{steps: {steps}, batch_size: 4, lr: {lr}, checkpoint_every: {steps}, seed: 0}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


def few_shot(kind: str, base: Path, args, options: dict, work: Path):
    """The adapters trained on the kind's 5% split through the seam's loop; the trained matcher."""
    import json

    from orchestrator.models.loading import load_model
    from orchestrator.storage import open_store
    from orchestrator.training import LoopConfig, train_trial

    work.mkdir(parents=True)
    lr = 1e-3 if options.get("adapter") == "lora" else 1e-2
    (work / "m.yaml").write_text(MANIFEST.format(kind=kind, base=base, options=json.dumps(options), n=args.scenes,
                                                 seed=args.seed, steps=args.train_steps, lr=lr))
    result = train_trial(work / "m.yaml", "0", config=LoopConfig(num_threads=1))
    loaded = load_model(result.checkpoint, store=open_store(str(work / "blobs")), base_dir=work)
    return loaded.model.scorer(), result


def row(name: str, flags: list[bool], cats: list[str], seconds: float) -> str:
    def cell(fl: list[bool]) -> str:
        k, n = int(sum(fl)), len(fl)
        lo, hi = wilson_interval(k, n)
        return f"{k / n:.3f} [{lo:.2f}, {hi:.2f}] n={n}"
    parts = [f"all {cell(flags)}"]
    for c in sorted(set(cats) - {""}):
        parts.append(f"{c} {cell([f for f, cc in zip(flags, cats) if cc == c])}")
    return f"  {name:28s} " + "  ".join(parts) + f"  ({seconds:.0f} s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="assets/demo-base")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1000, help="shapes scenes' seed (held out from training)")
    ap.add_argument("--train-steps", type=int, default=80, help="few-shot adapter steps (batch 4)")
    ap.add_argument("--clip-steps", type=int, default=1000, help="tiny CLIP training steps (0: no CLIP row)")
    ap.add_argument("--kinds", default="shapes-comvg,shapes-winoground")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = Path(args.base).resolve()
    clip = None
    if args.clip_steps:
        from orchestrator.models.clip import train_tiny_clip

        t0 = time.perf_counter()
        clip, res = train_tiny_clip(None, steps=args.clip_steps, seed=0)
        print(f"tiny CLIP: {args.clip_steps} steps on 4,000 shapes scenes of seed 0, loss {res.first_loss:.3f} -> "
              f"{res.final_loss:.3f} ({time.perf_counter() - t0:.0f} s)")
    print(f"base {args.base}; scenes 0..{args.scenes - 1} of seed {args.seed}; 1 thread")
    for kind in args.kinds.split(","):
        src = DataSource(kind=kind, n=args.scenes, seed=args.seed, fewshot="heldout")
        labelled = labelled_choices(src, 32)
        choices, cats = [c for c, _ in labelled], [cat for _, cat in labelled]
        trained_on = len(labelled_choices(src.model_copy(update={"fewshot": "train"}), 32))
        print(f"\n{kind}: {len(choices)} held-out choices ({trained_on} in the 5% few-shot train part); "
              f"accuracy [95% Wilson] by category")
        outcomes: dict[str, list[bool]] = {}
        for name, (method, opts) in ZERO_SHOT.items():
            t0 = time.perf_counter()
            scorer = DiffusionScorer(load_components(base), DiscffusionOptions(**opts), method=method)
            with torch.no_grad():
                outcomes[name] = judge(scorer, choices)[0]
            print(row(name + " (zero-shot)", outcomes[name], cats, time.perf_counter() - t0), flush=True)
        for name, opts in FEW_SHOT.items():
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                scorer, res = few_shot(kind, base, args, opts, Path(tmp) / "trial")
                with torch.no_grad():
                    outcomes[name] = judge(scorer, choices)[0]
            print(row(name, outcomes[name], cats, time.perf_counter() - t0) + f"  final loss {res.final_loss:.4f}",
                  flush=True)
        if clip is not None:
            t0 = time.perf_counter()
            outcomes["tiny CLIP"] = judge(NamedScorer("clip:tiny", clip), choices)[0]
            print(row("tiny CLIP", outcomes["tiny CLIP"], cats, time.perf_counter() - t0))
        print(f"  McNemar vs {REFERENCE} zero-shot (exact, two-sided; only-this / only-reference):")
        for name, flags in outcomes.items():
            if name != REFERENCE:
                t = mcnemar(flags, outcomes[REFERENCE])
                print(f"    {name:28s} {t['only_a']:4d} / {t['only_b']:4d}  p={t['p_value']:.3g}")
    print("\nchance: 0.5 (two candidates; a tie fails)")


if __name__ == "__main__":
    main()
